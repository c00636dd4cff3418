"""What every ``dicomvault`` sub-command shares: the --config option and settings loading."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dicomvault.config import Settings, load_settings
from dicomvault.errors import DicomVaultError

console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config file (DICOMVAULT_* variables override it).",
                 envvar="DICOMVAULT_CONFIG"),
]


def settings_from(config: Path | None) -> Settings:
    """Load settings for a command; exits with a clear message on a bad config."""
    try:
        return load_settings(config, os.environ)
    except DicomVaultError as exc:
        err_console.print(f"[red]configuration error:[/red] {exc.detail}")
        raise typer.Exit(2) from None
