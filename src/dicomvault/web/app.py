"""``create_app(services)``: the HTTPS door (FastAPI) — DICOMweb, REST admin API, auth, health, UI.

Middleware, outermost first: metrics (route templates only), security
headers (HSTS, CSP, nosniff, frame-ancestors, Referrer-Policy, no-store,
CORP on DICOMweb), CORS (only ``http.cors_origins``; preflight needs no
authentication), request size limit (``http.max_body_mb``, chunked bodies
included), incidents (an unhandled error → 500 with an opaque id), and the
busiest DICOMweb GET routes served without FastAPI's per-request machinery
(``web/hot_routes.py``).  Errors become ``application/problem+json`` (``web/problems.py``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from dicomvault.audit.metrics import Metrics
from dicomvault.services.context import Services
from dicomvault.web import problems
from dicomvault.web.deps import CSRF_HEADER
from dicomvault.web.hot_routes import HotRoutes, hot_routes
from dicomvault.web.middleware import (
    BodyLimitMiddleware,
    IncidentMiddleware,
    MetricsMiddleware,
    SecurityHeadersMiddleware,
)
from dicomvault.web.routers import admin, auth, health, qido, stow, wado, wado_uri

CORS_HEADERS = ["Authorization", "Accept", "Content-Type", CSRF_HEADER]
CORS_EXPOSE = ["Content-Type", "Content-Length", "Warning", "Content-Location", "Location"]


def _mount_ui(app: FastAPI, services: Services) -> None:
    """The web UI (``web/routers/ui.py``) when present; it serves ``/``, ``/ui/*``, ``/viewer/*``."""
    try:
        from dicomvault.web.routers import ui  # type: ignore[attr-defined]
    except ImportError:
        return
    router = getattr(ui, "router", None)
    if router is not None:
        app.include_router(router)
    configure = getattr(ui, "configure", None)
    if callable(configure):
        configure(app, services)


def create_app(services: Services, *, oidc_client_secret: str = "",
               metrics: Metrics | None = None, fast_path: bool = True) -> FastAPI:
    """Build the ASGI application around an already-built service graph.

    ``fast_path=False`` sends every request through FastAPI, ``HOT_ENDPOINTS``
    included (``web/hot_routes.py``); the tests compare the two.
    """
    app = FastAPI(title="dicomvault", version="1.0", openapi_url="/api/openapi.json", docs_url=None,
                  redoc_url=None, swagger_ui_oauth2_redirect_url=None)
    app.state.services = services
    audit_metrics = getattr(services.audit, "metrics", None)
    app.state.metrics = metrics or audit_metrics or Metrics()
    if getattr(services.audit, "metrics", None) is None:
        services.audit.metrics = app.state.metrics
    app.state.oidc = auth.make_relying_party(services, oidc_client_secret)
    problems.install(app)
    for router in (stow.router, qido.router, wado_uri.router, wado.router, auth.router, admin.router,
                   health.router):
        app.include_router(router)
    _mount_ui(app, services)
    settings = services.settings.http
    if fast_path:
        app.add_middleware(HotRoutes, routes=hot_routes(app))
    app.add_middleware(IncidentMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_mb * 1024 * 1024)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_credentials=False,
                           allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
                           allow_headers=CORS_HEADERS, expose_headers=CORS_EXPOSE, max_age=600)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document served at ``/api/openapi.json``."""
    return app.openapi()
