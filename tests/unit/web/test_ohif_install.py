"""OHIF install: SRI verification, safe unpacking, re-basing to /viewer/, idempotence, app-config."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from dicomvault.config import load_settings
from dicomvault.errors import TamperedError, UnavailableError
from dicomvault.web import ohif

INDEX = ('<!doctype html><html><head><script>console.time("scriptToView"),window.PUBLIC_URL="/"</script>'
         '<link rel="manifest" href="/manifest.json"><link rel="icon" href="/assets/favicon.ico">'
         '<script rel="preload" as="script" src="/app-config.js"></script>'
         '<script rel="preload" as="script" type="module" src="/init-service-worker.js"></script>'
         '<title>OHIF Viewer</title><script>function browserImportFunction(n){return import(n)}'
         'window.PUBLIC_URL="/"</script><script defer src="/app.bundle.abc123.js"></script>'
         '<link href="/app.bundle.css" rel="stylesheet"></head><body><div id="root"></div></body></html>')
GOOD = {
    "package/package.json": b"{}",
    "package/dist/index.html": INDEX.encode(),
    "package/dist/app.bundle.abc123.js": b'(() => {\n__webpack_require__.p = "/";\n})();',
    "package/dist/app.bundle.css": b"@font-face{src:url(/a34f.woff2)}",
    "package/dist/app-config.js": b"window.config = {dataSources: [{qidoRoot: 'https://example.org'}]};",
    "package/dist/app.bundle.abc123.js.map": b"{}",
    "package/dist/sw.js": b"importScripts('https://cdn.example.org/workbox.js')",
    "package/dist/assets/favicon.ico": b"\x00\x01",
}


def tarball(path: Path, files: dict[str, bytes], extra: list[tarfile.TarInfo] | None = None) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def settings_for(tmp_path: Path):
    return load_settings(None, {"DICOMVAULT_DATA_DIR": str(tmp_path / "data")})


def test_install_verifies_unpacks_and_rebases_to_viewer(tmp_path: Path) -> None:
    integrity = tarball(tmp_path / "app.tgz", GOOD)
    settings = settings_for(tmp_path)
    result = ohif.install(settings, tarball=tmp_path / "app.tgz", integrity=integrity)
    root = tmp_path / "data" / "cache" / f"ohif-{ohif.OHIF_VERSION}"
    assert result.path == root and result.installed_now
    index = (root / "index.html").read_text()
    assert "<script>" not in index  # no inline script: a strict CSP holds
    assert index.index(f'src="/viewer/{ohif.BOOT_SCRIPT}"') < index.index('src="/viewer/app-config.js"')
    assert 'src="/viewer/app.bundle.abc123.js"' in index and 'href="/viewer/assets/favicon.ico"' in index
    assert "init-service-worker" not in index and "manifest" not in index
    assert b'__webpack_require__.p = "/viewer/"' in (root / "app.bundle.abc123.js").read_bytes()
    assert b"url(/viewer/a34f.woff2)" in (root / "app.bundle.css").read_bytes()
    for absent in ("app-config.js", "sw.js", "app.bundle.abc123.js.map", "package.json"):
        assert not (root / absent).exists()
    marker = json.loads((root / ohif.MARKER).read_text())
    assert marker["integrity"] == integrity and marker["version"] == ohif.OHIF_VERSION


def test_install_is_idempotent(tmp_path: Path) -> None:
    integrity = tarball(tmp_path / "app.tgz", GOOD)
    settings = settings_for(tmp_path)
    ohif.install(settings, tarball=tmp_path / "app.tgz", integrity=integrity)
    (tmp_path / "app.tgz").unlink()  # a second run must not need the package at all
    again = ohif.install(settings, tarball=tmp_path / "app.tgz", integrity=integrity)
    assert not again.installed_now and ohif.is_installed(again.path, integrity)


def test_install_refuses_package_with_wrong_integrity(tmp_path: Path) -> None:
    tarball(tmp_path / "app.tgz", GOOD)
    settings = settings_for(tmp_path)
    with pytest.raises(TamperedError):
        ohif.install(settings, tarball=tmp_path / "app.tgz", integrity=ohif.OHIF_INTEGRITY)
    assert not ohif.ohif_dir(settings).exists()


def _link(name: str, kind: bytes, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("bad", [
    _link("package/dist/evil.js", tarfile.SYMTYPE, "/etc/passwd"),
    _link("package/dist/hard.js", tarfile.LNKTYPE, "package/dist/index.html"),
    _link("package/dist/fifo", tarfile.FIFOTYPE, ""),
])
def test_install_refuses_links_and_special_files(tmp_path: Path, bad: tarfile.TarInfo) -> None:
    integrity = tarball(tmp_path / "app.tgz", GOOD, [bad])
    settings = settings_for(tmp_path)
    with pytest.raises(TamperedError):
        ohif.install(settings, tarball=tmp_path / "app.tgz", integrity=integrity)
    assert not ohif.ohif_dir(settings).exists()


@pytest.mark.parametrize("name", ["package/dist/../../escape.js", "package/dist//abs.js",
                                  "package/dist/a/../../b.js"])
def test_install_refuses_path_traversal(tmp_path: Path, name: str) -> None:
    integrity = tarball(tmp_path / "app.tgz", {**GOOD, name: b"x"})
    settings = settings_for(tmp_path)
    with pytest.raises(TamperedError):
        ohif.install(settings, tarball=tmp_path / "app.tgz", integrity=integrity)
    assert not (tmp_path / "escape.js").exists() and not (tmp_path / "data" / "cache" / "escape.js").exists()


def test_download_refuses_plain_http(tmp_path: Path) -> None:
    with pytest.raises(UnavailableError):
        ohif.download("http://registry.npmjs.org/@ohif/app/-/app-3.13.2.tgz", tmp_path / "x.tgz")


def test_ohif_dir_follows_setting(tmp_path: Path) -> None:
    settings = load_settings(None, {"DICOMVAULT_OHIF_DIR": str(tmp_path / "ohif")})
    assert ohif.ohif_dir(settings) == tmp_path / "ohif"


def test_app_config_has_one_same_origin_dicomweb_source() -> None:
    config = ohif.app_config()
    sources = config["dataSources"]
    assert isinstance(sources, list) and len(sources) == 1
    source = sources[0]["configuration"]
    assert {source[k] for k in ("qidoRoot", "wadoRoot", "wadoUriRoot")} == {"/dicomweb"}
    assert source["imageRendering"] == "wadors" and source["thumbnailRendering"] == "thumbnail"
    assert config["routerBasename"] == "/viewer" and config["extensions"] == [] and config["modes"] == []
    assert "http" not in ohif.app_config_js()
