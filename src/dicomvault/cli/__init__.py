"""``dicomvault`` command line: init, serve, migrate, keys, and the admin sub-commands.

The CLI is an entry point: it reads the environment (only entry points do)
and the config file, then calls services.
"""

from __future__ import annotations

import importlib
import os
from typing import Annotated

import typer

from dicomvault.cli.common import ConfigOption, console, err_console, settings_from
from dicomvault.errors import DicomVaultError

app = typer.Typer(help="dicomvault — secure, compliance-first DICOM archive.", no_args_is_help=True)
keys_app = typer.Typer(help="Key management (KEK rotation).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")



@app.command()
def init(config: ConfigOption = None,
         admin_user: Annotated[str, typer.Option(help="Name of the first administrator.")] = "admin") -> None:
    """Create the data folder, keys, local CA + server certificate, schema and first admin."""
    from dicomvault.services.setup import initialise

    settings = settings_from(config)
    try:
        result = initialise(settings, os.environ, admin_user=admin_user)
    except DicomVaultError as exc:
        err_console.print(f"[red]init failed:[/red] {exc.detail}")
        raise typer.Exit(1) from None
    console.print(f"[green]Initialised[/green] data folder {settings.data_dir.resolve()}")
    console.print(f"  KEK:            {result.kek_location}")
    console.print(f"  CA certificate: {settings.tls_ca_file}")
    console.print(f"  Server cert:    {settings.tls_cert_file}")
    if result.admin_password:
        console.print("\n[bold yellow]One-time administrator credential (shown once, change it at "
                      "first login):[/bold yellow]")
        console.print(f"  user:     {admin_user}")
        console.print(f"  password: {result.admin_password}")


@app.command()
def serve(config: ConfigOption = None) -> None:
    """Run the DIMSE (TLS) and HTTPS listeners until SIGTERM/SIGINT."""
    from dicomvault.allocator import keep_large_blocks
    from dicomvault.cli.runtime import run_server

    keep_large_blocks()

    settings = settings_from(config)
    try:
        run_server(settings, os.environ, log=console.print)
    except DicomVaultError as exc:
        err_console.print(f"[red]cannot start:[/red] {exc.detail}")
        raise typer.Exit(1) from None


@app.command()
def migrate(config: ConfigOption = None) -> None:
    """Apply pending database migrations (Alembic)."""
    from dicomvault.index.db import make_engine
    from dicomvault.index.migrate import current, upgrade

    settings = settings_from(config)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    console.print(f"schema at revision {current(engine)}")
    engine.dispose()


@keys_app.command("rotate")
def keys_rotate(config: ConfigOption = None) -> None:
    """Rotate the KEK: re-wrap every DEK and the root secret; data is not re-encrypted."""
    from dicomvault.services.setup import rotate_kek

    settings = settings_from(config)
    try:
        old, new, count = rotate_kek(settings, os.environ)
    except DicomVaultError as exc:
        err_console.print(f"[red]rotation failed:[/red] {exc.detail}")
        raise typer.Exit(1) from None
    console.print(f"KEK rotated {old} -> {new}; {count} data keys re-wrapped")


@app.command()
def fixity(config: ConfigOption = None) -> None:
    """Recompute every stored object's SHA-256 and report changes (raises a Security Alert)."""
    from dicomvault.services.context import build_services

    services = build_services(settings_from(config))
    report = services.archive.fixity_check()
    console.print(f"checked {report.checked}: {len(report.bad)} modified, {len(report.missing)} missing")
    services.close()
    if report.bad or report.missing:
        raise typer.Exit(1)


def _mount(module_name: str, name: str) -> None:
    """Mount ``dicomvault.cli.<module>``: its ``command`` as one command, or its ``app`` as a group."""
    try:
        module = importlib.import_module(f"dicomvault.cli.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("dicomvault.cli"):
            return
        raise
    if hasattr(module, "command"):
        app.command(name)(module.command)
    else:
        app.add_typer(module.app, name=name)


for _module, _name in (("deid", "deid"), ("audit", "audit"), ("users", "user"), ("peers", "peer"),
                       ("viewer", "viewer")):
    _mount(_module, _name)


def main() -> None:
    app()
