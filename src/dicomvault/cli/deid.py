"""``dicomvault deid IN OUT``: de-identify files or folders (PS3.15 Annex E).

The pseudonym key comes from the archive keyring (``--config``) or, for
standalone use, from ``--key-file`` (32 bytes, base64).  Only this module
reads the environment, as the entry point.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dicomvault.deid.batch import BatchReport, run_batch
from dicomvault.deid.options import parse_option
from dicomvault.deid.profile import DeidConfig, build_config, load_profile_file
from dicomvault.errors import DicomVaultError

app = typer.Typer(help="De-identify DICOM files (PS3.15 Basic Profile and options).",
                  context_settings={"allow_interspersed_args": True})


def _load_key(key_file: Path | None, config_path: Path | None) -> bytes:
    if key_file is not None:
        try:
            key = base64.b64decode(key_file.read_text().strip(), validate=True)
        except (OSError, binascii.Error):
            raise typer.BadParameter("cannot read a base64 key from --key-file") from None
        if len(key) != 32:
            raise typer.BadParameter("--key-file must hold 32 bytes (base64)")
        return key
    from dicomvault.config import load_settings
    from dicomvault.crypto.keyring import open_keyring

    settings = load_settings(config_path, os.environ)
    keyring = open_keyring(settings.keys_dir, settings.kek_file, settings.keys.kek_env,
                           os.environ)
    return keyring.pseudonym_key


def _write_mapping(report: BatchReport, key: bytes, path: Path) -> None:
    """Seal the mapping records with a key derived from the pseudonym key (AES-GCM)."""
    import hashlib
    import hmac

    from dicomvault.crypto.keyring import DataKey

    records = {(m.kind, m.original): m.pseudonym for m in report.mappings}
    doc = json.dumps([{"kind": k, "original": o, "pseudonym": p}
                      for (k, o), p in sorted(records.items())]).encode()
    sealing = DataKey(hmac.new(key, b"dicomvault/v1/deid-mapping-file", hashlib.sha256).digest())
    path.write_bytes(sealing.seal(doc, aad=b"dicomvault-deid-mapping"))
    path.chmod(0o600)


def _summary(console: Console, report: BatchReport) -> None:
    table = Table(title="De-identification summary")
    table.add_column("status")
    table.add_column("files", justify="right")
    for status in ("ok", "refused", "error"):
        table.add_row(status, str(report.count(status)))
    console.print(table)
    bad = [o for o in report.outcomes if o.status != "ok"]
    if bad:
        detail = Table(title="Files not released")
        detail.add_column("file")
        detail.add_column("status")
        detail.add_column("reason")
        for o in bad:
            detail.add_row(str(o.source), o.status, o.detail)
        console.print(detail)


@app.callback(invoke_without_command=True)
def deid(
    source: Annotated[Path, typer.Argument(help="Input DICOM file or folder.")],
    out: Annotated[Path, typer.Argument(help="Output folder (or a .dcm file for one input).")],
    profile: Annotated[str, typer.Option(help="Confidentiality profile.")] = "basic",
    option: Annotated[list[str] | None, typer.Option(
        "--option", "-o", help="Profile option (name or CID 7050 code); repeatable.")] = None,
    project: Annotated[str | None, typer.Option(help="Project (pseudonym namespace).")] = None,
    options_file: Annotated[Path | None, typer.Option(help="TOML profile/options file.")] = None,
    config: Annotated[Path | None, typer.Option(help="dicomvault config (keyring).")] = None,
    key_file: Annotated[Path | None, typer.Option(
        help="Standalone pseudonym key: 32 bytes, base64.")] = None,
    no_ocr: Annotated[bool, typer.Option("--no-ocr", help="Region rules only.")] = False,
    mapping_out: Annotated[Path | None, typer.Option(
        help="Write the (encrypted) re-identification mapping here.")] = None,
) -> None:
    """De-identify IN into OUT and print a summary; exit 1 if any file was not released."""
    console = Console(stderr=True)
    try:
        options = [parse_option(o) for o in option or []]
        extra = {"ocr": False} if no_ocr else {}
        cfg: DeidConfig
        if options_file is not None:
            cfg = load_profile_file(options_file, profile=profile, project=project,
                                    add_options=options, **extra)
        else:
            cfg = build_config(profile, [o.value for o in options], project or "default",
                               **extra)
        key = _load_key(key_file, config)
    except DicomVaultError as exc:
        console.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(2) from None
    if not source.exists():
        console.print("[red]error:[/red] input does not exist")
        raise typer.Exit(2)
    with Progress(TextColumn("de-identifying"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("deid", total=None)

        def step(done: int, total: int, _path: Path) -> None:
            bar.update(task, completed=done, total=total)

        report = run_batch(source, out, cfg, key, progress=step)
    if mapping_out is not None and cfg.keep_mapping:
        _write_mapping(report, key, mapping_out)
    _summary(console, report)
    if report.count("ok") != len(report.outcomes):
        raise typer.Exit(1)
