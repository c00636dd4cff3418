"""``dicomvault user ...``: accounts, roles, MFA, care teams and API tokens.

The local operator acts as the ``system:cli`` principal; every change goes
through ``IdentityService`` (policy + audit), exactly as the admin API does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from dicomvault.access.identity import IdentityService
from dicomvault.access.principal import Principal, system_principal
from dicomvault.cli.common import ConfigOption
from dicomvault.errors import DicomVaultError

app = typer.Typer(help="Users: add, list, disable, roles, MFA reset, care teams, API tokens.",
                  no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")

RolesOption = Annotated[list[str], typer.Option("--role", "-r", help="Role (repeat for several).")]


def operator() -> Principal:
    """The local operator running the CLI."""
    return system_principal("cli")


@contextmanager
def identity_service(config: Path | None) -> Iterator[IdentityService]:
    """Build the services from the config (entry point: reads the environment)."""
    from dicomvault.config import load_settings
    from dicomvault.services.context import build_services

    try:
        services = build_services(load_settings(config, os.environ), environ=os.environ)
    except DicomVaultError as exc:
        err_console.print(f"[red]cannot open the archive:[/red] {exc.detail}")
        raise typer.Exit(2) from None
    try:
        yield services.identity
    finally:
        services.close()


def run(config: Path | None, action: Callable[[IdentityService], T]) -> T:
    """Run one identity action; print service errors (never PHI) and exit 1."""
    with identity_service(config) as identity:
        try:
            return action(identity)
        except DicomVaultError as exc:
            err_console.print(f"[red]error:[/red] {exc.detail} ({exc.code})")
            raise typer.Exit(1) from None


@app.command("add")
def add(username: str, role: RolesOption, name: Annotated[str, typer.Option(help="Display name.")] = "",
        invite: Annotated[bool, typer.Option(help="Create an invite token instead of a one-time password.")]
        = False, config: ConfigOption = None) -> None:
    """Create a user with a one-time password (or an invite); both are shown once."""
    created = run(config, lambda i: i.create_user(operator(), username, set(role), name, invite=invite))
    console.print(f"created user {created.username} ({created.user_id})")
    if created.one_time_password:
        console.print(f"one-time password (change at first login): {created.one_time_password}")
    if created.invite_token:
        console.print(f"invite token (expires in 72 h): {created.invite_token}")


@app.command("list")
def list_users(config: ConfigOption = None) -> None:
    """List accounts (no secrets)."""
    users = run(config, lambda i: i.list_users(operator()))
    table = Table("username", "id", "roles", "enabled", "mfa", "sso")
    for u in users:
        table.add_row(u.username, u.user_id, ",".join(sorted(u.roles)), str(u.enabled),
                      str(u.mfa_enabled), str(u.sso))
    console.print(table)


@app.command("disable")
def disable(username: str, config: ConfigOption = None) -> None:
    """Disable an account; its sessions end at once."""
    run(config, lambda i: i.set_enabled(operator(), username, False))
    console.print(f"disabled {username}")


@app.command("enable")
def enable(username: str, config: ConfigOption = None) -> None:
    """Re-enable an account."""
    run(config, lambda i: i.set_enabled(operator(), username, True))
    console.print(f"enabled {username}")


@app.command("reset-mfa")
def reset_mfa(username: str, config: ConfigOption = None) -> None:
    """Remove the second factor; the user enrols again at the next login."""
    run(config, lambda i: i.reset_mfa(operator(), username))
    console.print(f"MFA reset for {username}")


@app.command("set-roles")
def set_roles(username: str, role: RolesOption, config: ConfigOption = None) -> None:
    """Replace a user's roles (effective on their next request)."""
    run(config, lambda i: i.set_roles(operator(), username, set(role)))
    console.print(f"roles of {username}: {','.join(sorted(role))}")


@app.command("assign")
def assign(username: str, study_uid: str,
           remove: Annotated[bool, typer.Option(help="Remove from the care team.")] = False,
           config: ConfigOption = None) -> None:
    """Add a user to (or remove from) a study's care team."""
    run(config, lambda i: i.assign_care_team(operator(), username, study_uid, remove=remove))
    verb = "removed from" if remove else "assigned to"
    console.print(f"{username} {verb} {study_uid}")


@app.command("token-create")
def token_create(username: str,
                 scope: Annotated[list[str], typer.Option(
                     "--scope", "-s", help="Permission, e.g. study:read.")],
                 name: Annotated[str, typer.Option(help="Label for the token.")] = "cli",
                 days: Annotated[int, typer.Option(help="Lifetime in days (1-365).")] = 90,
                 config: ConfigOption = None) -> None:
    """Create a personal API token (shown once; stored only as a keyed hash)."""
    issued = run(config, lambda i: i.create_api_token(operator(), username, name, set(scope), days))
    console.print(f"token id: {issued.token_id}  expires: {issued.expires_at.isoformat()}")
    console.print(f"token (shown once): {issued.token}")


@app.command("token-revoke")
def token_revoke(token_id: str, config: ConfigOption = None) -> None:
    """Revoke a personal API token by id."""
    run(config, lambda i: i.revoke_api_token(operator(), token_id))
    console.print(f"revoked token {token_id}")
