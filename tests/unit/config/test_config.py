"""config.py: TOML + DICOMVAULT_* overrides, fail-fast validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomvault.config import load_settings
from dicomvault.errors import ConfigurationError


def test_defaults_are_secure():
    s = load_settings(None, {})
    assert s.dimse.port == 11112 and s.dimse.plain_port == 0
    assert s.dimse.require_client_cert and s.dimse.reject_unknown_peers
    assert s.archive.on_duplicate == "reject"
    assert s.security.session_idle_minutes == 15 and s.security.session_absolute_hours == 12
    assert s.weakened_security() == []


def test_toml_then_environment_override(tmp_path: Path):
    cfg = tmp_path / "dv.toml"
    cfg.write_text('data_dir = "/srv/dv"\n[dimse]\nport = 2762\nae_title = "PACS"\n'
                   '[[peers]]\nae_title = "CT1"\nhost = "10.0.0.5"\nport = 104\nservices = ["store", "echo"]\n')
    s = load_settings(cfg, {"DICOMVAULT_DIMSE__PORT": "11113", "DICOMVAULT_HTTP__CORS_ORIGINS": "https://a,https://b",
                            "DICOMVAULT_DIMSE__REQUIRE_CLIENT_CERT": "false"})
    assert s.data_dir == Path("/srv/dv") and s.dimse.ae_title == "PACS"
    assert s.dimse.port == 11113
    assert s.http.cors_origins == ("https://a", "https://b")
    assert s.peer("CT1").services == ("store", "echo")
    assert "dimse.require_client_cert=false" in s.weakened_security()


@pytest.mark.parametrize("toml,env,needle", [
    ("[dimse]\nport = 'x'\n", {}, "dimse.port"),
    ("[dimse]\nnope = 1\n", {}, "unknown key"),
    ("", {"DICOMVAULT_NOPE__X": "1"}, "unknown section"),
    ("[archive]\non_duplicate = 'merge'\n", {}, "archive.on_duplicate"),
    ("[[peers]]\nae_title = 'A'\nservices = ['teleport']\n", {}, "services"),
    ("[[peers]]\nae_title = 'A'\n[[peers]]\nae_title = 'A'\n", {}, "duplicate"),
    ("[dimse]\nae_title = 'WAYTOOLONGAETITLE123'\n", {}, "ae_title"),
    ("not toml [", {}, "dv.toml"),
])
def test_bad_config_fails_fast_naming_the_key(tmp_path, toml, env, needle):
    cfg = tmp_path / "dv.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigurationError) as exc:
        load_settings(cfg, env)
    assert needle in exc.value.detail


def test_missing_config_file():
    with pytest.raises(ConfigurationError):
        load_settings("/nonexistent/dv.toml", {})


def test_every_setting_is_documented():
    import dataclasses

    from dicomvault.config import PeerSettings, Settings

    doc = (Path(__file__).parents[3] / "docs" / "configuration.md").read_text()
    for f in dataclasses.fields(Settings):
        tp = f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        if dataclasses.is_dataclass(tp):
            assert f"[{f.name}]" in doc, f.name
            for sub in dataclasses.fields(tp):
                assert f"`{sub.name}`" in doc, f"{f.name}.{sub.name}"
        else:
            assert f"`{f.name}`" in doc or f.name == "peers"
    for sub in dataclasses.fields(PeerSettings):
        assert f"`{sub.name}`" in doc, f"peers.{sub.name}"
