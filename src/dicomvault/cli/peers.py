"""``dicomvault peer ...``: the DICOM AEs allowed to associate (and C-MOVE destinations)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dicomvault.cli.users import ConfigOption, operator, run
from dicomvault.config import DIMSE_SERVICES, PeerSettings

app = typer.Typer(help="DICOM peers: add, list, remove.", no_args_is_help=True)
console = Console()


@app.command("add")
def add(
    ae_title: str,
    host: Annotated[str, typer.Option(help="Host the archive connects to (C-MOVE destination).")] = "",
    port: Annotated[int, typer.Option(help="Port of the peer's SCP.")] = 0,
    tls: Annotated[bool, typer.Option(help="Connect to the peer over TLS.")] = True,
    service: Annotated[list[str] | None, typer.Option(
        "--service", help=f"Allowed service (repeat): {', '.join(DIMSE_SERVICES)}.")] = None,
    move_dest: Annotated[list[str] | None, typer.Option(
        "--move-dest", help="AE title this peer may name as C-MOVE destination (repeat).")] = None,
    allowed_host: Annotated[list[str] | None, typer.Option(
        "--allowed-host", help="Accept associations only from this address (repeat).")] = None,
    cert_sha256: Annotated[str, typer.Option(help="SHA-256 of the client certificate to pin.")] = "",
    role: Annotated[str, typer.Option(help="Role of the principal this AE becomes.")] = "service",
    config: ConfigOption = None,
) -> None:
    """Add or replace a peer (audited as a network configuration change)."""
    peer = PeerSettings(
        ae_title=ae_title, host=host, port=port, tls=tls,
        services=tuple(service) if service else DIMSE_SERVICES,
        move_destinations=tuple(move_dest or ()), allowed_hosts=tuple(allowed_host or ()),
        client_cert_sha256=cert_sha256, role=role,
    )
    run(config, lambda i: i.add_peer(operator(), peer))
    console.print(f"saved peer {ae_title}")


@app.command("list")
def list_peers(config: ConfigOption = None) -> None:
    """Managed peers and those from the config file."""
    peers = run(config, lambda i: i.list_peers(operator()))
    table = Table("AE title", "host", "port", "tls", "services", "move destinations", "role", "cert")
    for p in peers:
        table.add_row(p.ae_title, p.host, str(p.port), str(p.tls), ",".join(p.services),
                      ",".join(p.move_destinations), p.role, (p.client_cert_sha256[:16] + "…")
                      if p.client_cert_sha256 else "")
    console.print(table)


@app.command("remove")
def remove(ae_title: str, config: ConfigOption = None) -> None:
    """Remove a managed peer."""
    run(config, lambda i: i.remove_peer(operator(), ae_title))
    console.print(f"removed peer {ae_title}")

