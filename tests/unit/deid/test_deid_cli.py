"""``dicomvault deid IN OUT`` mounted as a sub-command, with a standalone key file."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from dicomvault.cli.deid import app as deid_app
from tests.unit.deid.deid_builders import KEY, full_table_dataset


@pytest.fixture
def cli() -> typer.Typer:
    root = typer.Typer()

    @root.command()
    def version() -> None:  # a sibling command, as in the real CLI
        typer.echo("0")

    root.add_typer(deid_app, name="deid")
    return root


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "pseudonym.key"
    path.write_text(base64.b64encode(KEY).decode())
    return path


def test_cli_deidentifies_folder_with_options_and_summary(cli, key_file: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "in"
    src.mkdir()
    full_table_dataset(instance="1").save_as(src / "a.dcm", enforce_file_format=True)
    (src / "bad.txt").write_text("nope")
    mapping = tmp_path / "map.bin"
    result = CliRunner(env={"COLUMNS": "200"}).invoke(cli, [
        "deid", str(src), str(tmp_path / "out"), "--profile", "basic",
        "--option", "retain-uids", "-o", "113105", "--project", "CLI",
        "--key-file", str(key_file), "--mapping-out", str(mapping)])
    assert result.exit_code == 1, result.output  # one file was not DICOM
    assert "summary" in result.output
    assert re.search(r"ok\s*│\s*1\s*│", result.output)
    assert re.search(r"error\s*│\s*1\s*│", result.output)
    assert "not a DICOM file" in result.output
    outputs = list((tmp_path / "out").iterdir())
    assert len(outputs) == 1
    import pydicom

    ds = pydicom.dcmread(outputs[0])
    assert [i.CodeValue for i in ds.DeidentificationMethodCodeSequence] == [
        "113100", "113105", "113110"]
    assert b"1.2.826.0.1.3680043.10.543" not in mapping.read_bytes()  # sealed, not plaintext


def test_cli_reads_options_file(cli, key_file: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "a.dcm"
    full_table_dataset().save_as(src, enforce_file_format=True)
    opts = tmp_path / "project.toml"
    opts.write_text('profile = "basic"\nproject = "FILEPROJ"\n'
                    'options = ["retain-patient-characteristics"]\nkeep_mapping = false\n')
    result = CliRunner().invoke(cli, ["deid", str(src), str(tmp_path / "o.dcm"),
                                      "--options-file", str(opts), "--key-file", str(key_file)])
    assert result.exit_code == 0, result.output
    import pydicom

    ds = pydicom.dcmread(tmp_path / "o.dcm")
    assert str(ds.PatientID).startswith("FILEPROJ-")
    assert ds.DeidentificationMethodCodeSequence[1].CodeValue == "113108"


@pytest.mark.parametrize("args", [["--option", "retain-everything"], ["--profile", "extended"]])
def test_cli_rejects_unknown_profile_or_option(cli, key_file: Path, tmp_path: Path,
                                               args: list[str]) -> None:  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(cli, ["deid", str(tmp_path), str(tmp_path / "o"), *args,
                                      "--key-file", str(key_file)])
    assert result.exit_code == 2


def test_cli_rejects_short_key_file(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "k"
    bad.write_text(base64.b64encode(b"short").decode())
    result = CliRunner().invoke(cli, ["deid", str(tmp_path), str(tmp_path / "o"),
                                      "--key-file", str(bad)])
    assert result.exit_code == 2


def test_cli_uses_archive_keyring_pseudonym_key(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import pydicom

    from dicomvault.config import load_settings
    from dicomvault.crypto.keyring import create_key_files, open_keyring
    from dicomvault.deid import DeidConfig, deidentify

    config = tmp_path / "dicomvault.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    settings = load_settings(config, {})
    settings.keys_dir.mkdir(parents=True, exist_ok=True)
    create_key_files(settings.keys_dir, settings.kek_file)
    src = tmp_path / "a.dcm"
    full_table_dataset().save_as(src, enforce_file_format=True)
    result = CliRunner().invoke(cli, ["deid", str(src), str(tmp_path / "o.dcm"),
                                      "--project", "KR", "--config", str(config)])
    assert result.exit_code == 0, result.output
    key = open_keyring(settings.keys_dir, settings.kek_file).pseudonym_key
    expected = deidentify(pydicom.dcmread(src), DeidConfig(project="KR"), key).dataset
    assert pydicom.dcmread(tmp_path / "o.dcm").SOPInstanceUID == expected.SOPInstanceUID
