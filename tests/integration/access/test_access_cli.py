"""``dicomvault user ...`` and ``dicomvault peer ...`` on an initialised archive (SQLite)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dicomvault.cli import app


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    environ = {"DICOMVAULT_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "250"}
    result = CliRunner().invoke(app, ["init"], env=environ)
    assert result.exit_code == 0, result.output
    return environ


def _run(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_user_lifecycle(env):
    out = _run(env, "user", "add", "rad1", "--role", "radiologist", "--name", "Dr Rad")
    assert re.search(r"one-time password \(change at first login\): \S{16,}", out)
    listing = _run(env, "user", "list")
    assert "rad1" in listing and "radiologist" in listing
    _run(env, "user", "set-roles", "rad1", "-r", "technologist", "-r", "radiologist")
    assert "radiologist,technologist" in _run(env, "user", "list").replace(" ", "")
    _run(env, "user", "assign", "rad1", "1.2.840.113619.2.1")
    _run(env, "user", "reset-mfa", "rad1")
    _run(env, "user", "disable", "rad1")
    assert re.search(r"rad1.*False", _run(env, "user", "list"))
    _run(env, "user", "enable", "rad1")


def test_cli_token_create_and_revoke(env):
    _run(env, "user", "add", "tech1", "-r", "technologist")
    out = _run(env, "user", "token-create", "tech1", "-s", "study:read", "--days", "7")
    token_id = re.search(r"token id: (\w+)", out).group(1)
    assert re.search(r"token \(shown once\): dv_\S+", out)
    assert "revoked" in _run(env, "user", "token-revoke", token_id)


def test_cli_refuses_bad_input(env):
    result = CliRunner().invoke(app, ["user", "add", "Bad Name!", "-r", "radiologist"], env=env)
    assert result.exit_code == 1
    result = CliRunner().invoke(app, ["user", "add", "ok.name", "-r", "superuser"], env=env)
    assert result.exit_code == 1
    result = CliRunner().invoke(app, ["user", "token-create", "admin", "-s", "study:read"], env=env)
    assert result.exit_code == 1  # the admin role has no study:read to delegate


def test_cli_peer_add_list_remove(env):
    _run(env, "peer", "add", "CT1", "--host", "10.1.1.1", "--port", "104", "--service", "store",
         "--service", "echo", "--cert-sha256", "ab" * 32)
    listing = _run(env, "peer", "list")
    assert "CT1" in listing and "echo,store" in listing
    _run(env, "peer", "remove", "CT1")
    assert "CT1" not in _run(env, "peer", "list")
    result = CliRunner().invoke(app, ["peer", "remove", "CT1"], env=env)
    assert result.exit_code == 1
