"""Serve the installed OHIF Viewer under ``/viewer/`` from our own origin.

* The HTML entry (``/viewer/`` and OHIF's client-side routes such as
  ``/viewer/viewer?StudyInstanceUIDs=…``) needs a valid session of a role that
  may search studies (or holds a break-the-glass grant); otherwise the browser
  goes to the login page (no session) or gets an access-denied page.
* The package's static files (the public, open-source build) are served
  without a session; they carry no patient data.  Every study, series and
  pixel OHIF shows comes from ``/dicomweb``, which authenticates the session
  cookie, filters by the policy and audits each request like any other.
* Every ``/viewer/`` response carries the OHIF CSP and cross-origin isolation
  (workers take their CSP and COEP from their own response).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from dicomvault.web.ohif import BOOT_SCRIPT, VIEWER_BASE, app_config_js, is_installed, ohif_dir
from dicomvault.web.ui import pages
from dicomvault.web.ui.csp import OHIF_CSP, OHIF_WORKER_CSP, WORKER_DESTINATIONS
from dicomvault.web.ui.session import can_view_studies, page_principal

router = APIRouter(include_in_schema=False)
STATIC_DIR = Path(__file__).parent / "static"

#: MIME types the browser insists on (``application/wasm`` for streaming compilation).
_TYPES = {
    ".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8", ".wasm": "application/wasm", ".json": "application/json",
    ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon", ".woff2": "font/woff2",
    ".woff": "font/woff", ".ttf": "font/ttf", ".html": "text/html; charset=utf-8",
    ".xml": "application/xml", ".webapp": "application/json",
}
#: Bundles whose names carry a content hash may be cached; everything else is revalidated.
_IMMUTABLE = (".wasm", ".woff2", ".woff", ".ttf", ".png", ".ico", ".svg")


def _ohif_headers(request: Request) -> None:
    worker = request.headers.get("sec-fetch-dest", "") in WORKER_DESTINATIONS
    request.state.csp = OHIF_WORKER_CSP if worker else OHIF_CSP
    request.state.cross_origin_isolation = True


def _install_root(request: Request) -> Path:
    return ohif_dir(request.app.state.services.settings)


def _static_file(root: Path, rel: str) -> Path | None:
    """The file ``rel`` below ``root``; None if missing or outside it (no traversal)."""
    if not rel or "\\" in rel or "\x00" in rel:
        return None
    candidate = (root / rel).resolve()
    try:
        candidate.relative_to(root.resolve())
    except ValueError:
        return None
    return candidate if candidate.is_file() else None


def _cache_control(rel: str) -> str:
    name = rel.rsplit("/", 1)[-1]
    hashed = name.count(".") >= 2 and name.endswith((".js", ".css"))
    if hashed or name.endswith(_IMMUTABLE):
        return "private, max-age=86400"
    return "no-cache"


@router.get("/viewer")
def viewer_root() -> RedirectResponse:
    return RedirectResponse(VIEWER_BASE, status_code=308)


@router.get(f"{VIEWER_BASE}app-config.js")
def viewer_config(request: Request) -> Response:
    """OHIF ``window.config``: our single same-origin DICOMweb data source."""
    _ohif_headers(request)
    return Response(app_config_js(), media_type=_TYPES[".js"], headers={"Cache-Control": "no-cache"})


@router.get(f"{VIEWER_BASE}{BOOT_SCRIPT}")
def viewer_boot(request: Request) -> Response:
    """Replaces OHIF's inline scripts; adds the session watchdog to the viewer."""
    _ohif_headers(request)
    return FileResponse(STATIC_DIR / "ohif-boot.js", media_type=_TYPES[".js"],
                        headers={"Cache-Control": "no-cache"})


@router.get(VIEWER_BASE + "{rel:path}")
def viewer(rel: str, request: Request) -> Response:
    """A static file of the OHIF build, or the viewer page for OHIF's client-side routes."""
    _ohif_headers(request)
    root = _install_root(request)
    if not is_installed(root):
        return pages.message_page(request, "Viewer not installed",
                                  "Run 'dicomvault viewer install' on the server.", status=503)
    path = _static_file(root, rel) if rel and rel != "index.html" else None
    if path is not None:
        media = _TYPES.get(path.suffix, "application/octet-stream")
        return FileResponse(path, media_type=media, headers={"Cache-Control": _cache_control(rel)})
    if "." in rel.rsplit("/", 1)[-1]:
        return Response("not found", status_code=404, media_type="text/plain")
    principal, redirect = page_principal(request)
    if redirect is not None:
        return redirect
    assert principal is not None
    if not can_view_studies(principal):
        return pages.message_page(request, "Access denied",
                                  "Your role does not give access to images.", status=403)
    return FileResponse(root / "index.html", media_type=_TYPES[".html"],
                        headers={"Cache-Control": "no-store"})
