"""``dicomvault viewer ...``: install and inspect the OHIF Viewer served at ``/viewer/``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dicomvault.cli.common import ConfigOption, settings_from
from dicomvault.errors import DicomVaultError

app = typer.Typer(help="The OHIF Viewer (prebuilt, pinned, verified): install, status.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)



@app.command("install")
def install(
    config: ConfigOption = None,
    force: Annotated[bool, typer.Option(help="Download and unpack again even if installed.")] = False,
    tarball: Annotated[Path | None, typer.Option(
        help="Install from a local copy of the npm tarball (still verified).")] = None,
) -> None:
    """Fetch @ohif/app over HTTPS, verify its SRI hash, unpack dist/ safely (no Node.js needed)."""
    from dicomvault.web import ohif

    settings = settings_from(config)
    try:
        result = ohif.install(settings, force=force, tarball=tarball, log=console.print)
    except DicomVaultError as exc:
        err_console.print(f"[red]viewer install failed:[/red] {exc.detail}")
        raise typer.Exit(1) from None
    state = "installed" if result.installed_now else "already installed"
    console.print(f"OHIF {result.version} {state} in {result.path}")


@app.command("status")
def status(config: ConfigOption = None) -> None:
    """Whether the pinned OHIF version is installed, and where."""
    from dicomvault.web import ohif

    path = ohif.ohif_dir(settings_from(config))
    if ohif.is_installed(path):
        console.print(f"OHIF {ohif.OHIF_VERSION} installed in {path}")
        return
    console.print(f"OHIF {ohif.OHIF_VERSION} not installed (run 'dicomvault viewer install'); folder {path}")
    raise typer.Exit(1)
