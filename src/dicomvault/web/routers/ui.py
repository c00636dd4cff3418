"""The people's door: our own pages (``/ui/...``) and the OHIF Viewer (``/viewer/...``).

``create_app`` includes ``router`` and may call ``configure(app, services)``.
Screens are checked on the server for the role that may use them; the pages
call the JSON APIs of ``auth``/``admin`` and the few in ``ui.api``.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from dicomvault.web.ui import api, pages, screens, viewer
from dicomvault.web.ui.csp import UI_CSP

router = APIRouter(include_in_schema=False)
router.include_router(viewer.router)
router.include_router(screens.router)
router.include_router(api.router)

_STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".svg": "image/svg+xml"}


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=303)


@router.get("/ui/static/{name}")
def static(name: str, request: Request) -> Response:
    """Our ES modules, CSS and icons (a flat folder: no sub-paths, no traversal)."""
    request.state.csp = UI_CSP
    path = viewer.STATIC_DIR / name
    media = _STATIC_TYPES.get(path.suffix)
    if "/" in name or name.startswith(".") or media is None or not path.is_file():
        return Response("not found", status_code=404, media_type="text/plain")
    # The OHIF page loads the watchdog module and overlay CSS too: they must pass its COEP.
    return FileResponse(path, media_type=media, headers={
        "Cache-Control": "no-cache", "Cross-Origin-Resource-Policy": "same-origin"})


def configure(app: FastAPI, services: object) -> None:
    """Nothing to wire at startup: the pages read ``app.state.services`` per request."""
    del app, services


__all__ = ["configure", "pages", "router"]
