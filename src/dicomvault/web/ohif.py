"""The OHIF Viewer: fetch the pinned ``@ohif/app`` build, verify it, unpack it, configure it.

dicomvault does not build a viewer; it serves the prebuilt ``dist/`` of the
npm package ``@ohif/app`` from its own origin under ``/viewer/``.  Installing
needs no Node.js:

1. download the registry tarball over HTTPS (httpx, streamed to disk);
2. verify it against the registry's published Subresource-Integrity hash
   (``sha512-…``, W3C SRI / npm ``dist.integrity``) before reading it;
3. unpack ``package/dist/`` only: regular files and folders, no symlinks, hard
   links or devices, no absolute or ``..`` paths (CVE-2007-4559 class);
4. re-base the build from ``/`` to ``/viewer/`` (webpack public path, the CSS
   font URLs, ``index.html`` without inline scripts so a strict CSP holds);
5. move the result into place atomically and leave a marker, so a second run
   is a no-op.

``app-config.js`` is generated per request by :func:`app_config_js` (one
DICOMweb data source, same origin) and never read from the package.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import httpx

from dicomvault.config import Settings
from dicomvault.errors import TamperedError, UnavailableError

OHIF_VERSION = "3.13.2"
OHIF_TARBALL_URL = f"https://registry.npmjs.org/@ohif/app/-/app-{OHIF_VERSION}.tgz"
OHIF_INTEGRITY = (
    "sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
)
#: URL prefix OHIF is served under (also its ``routerBasename``).
VIEWER_BASE = "/viewer/"
MARKER = ".dicomvault-ohif.json"
#: Our boot script replaces OHIF's inline ``<script>`` blocks (CSP: no inline script).
BOOT_SCRIPT = "dicomvault-boot.js"
#: Largest tarball and unpacked size accepted (the 3.13.2 tarball is ~50 MB, dist ~200 MB).
MAX_TARBALL_BYTES = 200 * 1024 * 1024
MAX_UNPACKED_BYTES = 1024 * 1024 * 1024
_DIST_PREFIX = "package/dist/"
#: Files of the package we do not serve: source maps and the service-worker plumbing
#: (it would fetch Workbox from a CDN; OHIF works without a service worker).
_SKIP = re.compile(r"(\.map$|^sw\.js$|^init-service-worker\.js$|^_redirects$|^_headers$|^serve\.json$)")
_PUBLIC_PATH = re.compile(rb'__webpack_require__\.p = "/";')


@dataclass(frozen=True)
class InstallResult:
    """Where OHIF is installed and whether this call did the work."""

    path: Path
    version: str
    installed_now: bool


def ohif_dir(settings: Settings) -> Path:
    """The install folder: ``ohif_dir`` from the settings, else ``<data_dir>/cache/ohif-<version>``."""
    if settings.ohif_dir:
        return Path(settings.ohif_dir)
    return settings.data_dir / "cache" / f"ohif-{OHIF_VERSION}"


def is_installed(path: Path, integrity: str = OHIF_INTEGRITY) -> bool:
    """True when ``path`` holds a complete install of the pinned version (from ``integrity``)."""
    marker = path / MARKER
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(data.get("version") == OHIF_VERSION and data.get("integrity") == integrity
                and (path / "index.html").is_file())


def check_integrity(path: Path, integrity: str) -> None:
    """Verify a file against an SRI string (``sha512-<base64>``, W3C Subresource Integrity §3.1)."""
    algorithm, _, expected = integrity.partition("-")
    if algorithm not in ("sha512", "sha384", "sha256") or not expected:
        raise TamperedError("unsupported integrity string", code="integrity-format")
    digest = hashlib.new(algorithm)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if base64.b64encode(digest.digest()).decode() != expected:
        raise TamperedError("the OHIF package does not match its published integrity hash",
                            code="integrity-mismatch")


def download(url: str, target: Path, *, timeout: float = 120.0,
             transport: httpx.BaseTransport | None = None) -> None:
    """Stream ``url`` to ``target`` over HTTPS (certificate verified), with a size cap."""
    if not url.startswith("https://"):
        raise UnavailableError("the OHIF package must be fetched over HTTPS", code="ohif-insecure-url")
    size = 0
    try:
        with httpx.Client(timeout=timeout, follow_redirects=True, transport=transport) as client, \
                client.stream("GET", url) as response:
            if response.status_code != 200:
                raise UnavailableError(f"the npm registry answered {response.status_code}",
                                       code="ohif-download")
            with target.open("wb") as fh:
                for chunk in response.iter_bytes(1 << 20):
                    size += len(chunk)
                    if size > MAX_TARBALL_BYTES:
                        raise UnavailableError("the OHIF package is larger than expected",
                                               code="ohif-download")
                    fh.write(chunk)
    except httpx.HTTPError as exc:
        raise UnavailableError(f"cannot download the OHIF package ({type(exc).__name__})",
                               code="ohif-download") from None


def _safe_member_path(name: str) -> PurePosixPath | None:
    """The path below ``package/dist/`` of a tar member, or None if it is outside or unsafe."""
    if not name.startswith(_DIST_PREFIX):
        return None
    rel = PurePosixPath(name[len(_DIST_PREFIX):])
    if not rel.parts or rel.is_absolute() or any(p in ("..", "") for p in rel.parts) or "\\" in name:
        raise TamperedError("unsafe path in the OHIF package", code="unsafe-archive")
    return rel


def extract_dist(tarball: Path, dest: Path) -> int:
    """Unpack ``package/dist/`` of an npm tarball into ``dest``; refuse anything but files and folders.

    Returns the number of files written.
    """
    count = total = 0
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            rel = _safe_member_path(member.name)
            if rel is None:
                continue
            if not (member.isfile() or member.isdir()):
                raise TamperedError("link or special file in the OHIF package", code="unsafe-archive")
            out = dest.joinpath(*rel.parts)
            if member.isdir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            if (len(rel.parts) == 1 and _SKIP.search(rel.name)) or rel.suffix == ".map":
                continue
            total += member.size
            if total > MAX_UNPACKED_BYTES:
                raise TamperedError("the OHIF package unpacks larger than expected", code="unsafe-archive")
            out.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None  # a regular file always has content
            with source, out.open("wb") as fh:
                shutil.copyfileobj(source, fh, 1 << 20)
            out.chmod(0o644)
            count += 1
    if not (dest / "index.html").is_file():
        raise TamperedError("the OHIF package has no dist/index.html", code="unsafe-archive")
    return count


def _rewrite_index(html: str) -> str:
    """Re-base OHIF's ``index.html`` to ``/viewer/`` and drop its inline scripts (strict CSP)."""
    html = re.sub(r"<script>[^<]*</script>", "", html)
    html = re.sub(r'<script[^>]*src="/init-service-worker\.js"[^>]*></script>', "", html)
    html = re.sub(r'<link rel="manifest"[^>]*>', "", html)
    html = re.sub(r'<link rel="(apple-touch-startup-image|yandex-tableau-widget)"[^>]*>', "", html)
    html = re.sub(r'<meta name="msapplication-[^>]*>', "", html)
    html = re.sub(r'(href|src)="/(?!/)', rf'\1="{VIEWER_BASE}', html)
    boot = f'<script src="{VIEWER_BASE}{BOOT_SCRIPT}"></script>'
    html = html.replace("<title>OHIF Viewer</title>", "<title>dicomvault viewer</title>", 1)
    head_end = html.index("<script")  # the boot script runs before app-config.js and the bundle
    return html[:head_end] + boot + html[head_end:]


def rebase(dest: Path) -> list[str]:
    """Move the build from ``/`` to ``/viewer/``; returns the files changed."""
    changed = []
    for path in sorted(dest.rglob("*.js")):
        data = path.read_bytes()
        new = _PUBLIC_PATH.sub(f'__webpack_require__.p = "{VIEWER_BASE}";'.encode(), data)
        if new != data:
            path.write_bytes(new)
            changed.append(path.relative_to(dest).as_posix())
    for path in sorted(dest.glob("*.css")):
        data = path.read_bytes()
        new = re.sub(rb"url\(/(?!/)", f"url({VIEWER_BASE}".encode(), data)
        if new != data:
            path.write_bytes(new)
            changed.append(path.name)
    index = dest / "index.html"
    index.write_text(_rewrite_index(index.read_text(encoding="utf-8")), encoding="utf-8")
    changed.append("index.html")
    (dest / "app-config.js").unlink(missing_ok=True)  # generated per request instead
    return changed


def install(settings: Settings, *, force: bool = False, url: str = OHIF_TARBALL_URL,
            integrity: str = OHIF_INTEGRITY, tarball: Path | None = None,
            log: Callable[[str], object] = lambda _msg: None,
            transport: httpx.BaseTransport | None = None) -> InstallResult:
    """Install the pinned OHIF build (idempotent): download, verify, unpack safely, re-base.

    ``tarball`` installs from a local copy (still verified against ``integrity``).
    """
    target = ohif_dir(settings)
    if not force and is_installed(target, integrity):
        return InstallResult(target, OHIF_VERSION, False)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".ohif-", dir=target.parent) as tmp:
        work = Path(tmp)
        if tarball is None:
            tarball = work / "app.tgz"
            log(f"downloading @ohif/app {OHIF_VERSION}")
            download(url, tarball, transport=transport)
        check_integrity(tarball, integrity)
        log("integrity verified; unpacking")
        dist = work / "dist"
        dist.mkdir()
        files = extract_dist(tarball, dist)
        changed = rebase(dist)
        (dist / MARKER).write_text(json.dumps({
            "package": "@ohif/app", "version": OHIF_VERSION, "integrity": integrity,
            "source": url, "files": files, "rebased": changed,
        }, indent=1), encoding="utf-8")
        old = work / "old"
        if target.exists():
            target.rename(old)
        dist.rename(target)
    log(f"OHIF {OHIF_VERSION} installed in {target}")
    return InstallResult(target, OHIF_VERSION, True)


def app_config(dicomweb_root: str = "/dicomweb") -> dict[str, object]:
    """OHIF ``window.config``: one same-origin DICOMweb data source (PS3.18 QIDO-RS/WADO-RS).

    No other data source, no URL-driven configuration or customization, no
    extension that reaches the Internet.
    """
    return {
        "routerBasename": VIEWER_BASE.rstrip("/"),
        "extensions": [],
        "modes": [],
        # No onboarding tour (it covers the image in a reading room); no URL customizations.
        "customizationService": {"ohif.tours": {"$set": []}},
        "showStudyList": True,
        "maxNumberOfWebWorkers": 2,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "groupEnabledModesFirst": True,
        "investigationalUseDialog": {"option": "never"},
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 10},
        # Fetch the rest of the active series in the background, nearest slices first.
        "studyPrefetcher": {"enabled": True, "displaySets": 1, "maxNumPrefetchRequests": 10,
                            "order": "closest"},
        "showErrorDetails": "production",
        "defaultDataSourceName": "dicomvault",
        "dataSources": [{
            "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
            "sourceName": "dicomvault",
            "configuration": {
                "friendlyName": "dicomvault",
                "name": "dicomvault",
                "wadoUriRoot": dicomweb_root,
                "qidoRoot": dicomweb_root,
                "wadoRoot": dicomweb_root,
                "qidoSupportsIncludeField": False,
                "imageRendering": "wadors",
                "thumbnailRendering": "thumbnail",
                "thumbnailRequestStrategy": "fetch",
                "enableStudyLazyLoad": True,
                "supportsFuzzyMatching": False,
                "supportsWildcard": True,
                "staticWado": False,
                "singlepart": "bulkdata,video",
                "omitQuotationForMultipartRequest": True,
                "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
            },
        }],
    }


def app_config_js(dicomweb_root: str = "/dicomweb") -> str:
    """The ``app-config.js`` OHIF loads first: assigns ``window.config`` (JSON, no functions)."""
    return ("/* generated by dicomvault: one same-origin DICOMweb data source */\n"
            f"window.config = {json.dumps(app_config(dicomweb_root), indent=1)};\n")
