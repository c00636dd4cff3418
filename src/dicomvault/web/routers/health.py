"""Liveness, readiness and Prometheus metrics.

``/healthz`` says the process serves; ``/readyz`` that the index database
answers; ``/metrics`` (Prometheus text format) needs a principal allowed to
read the audit trail or manage configuration (the labels carry no PHI, but
volumes are operational data).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from dicomvault.access.permissions import AUDIT_READ, CONFIG_MANAGE
from dicomvault.access.policy import Resource
from dicomvault.errors import ForbiddenError
from dicomvault.web.deps import CurrentPrincipal, ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness")
def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz", summary="Readiness (database reachable)")
def readyz(services: ServicesDep) -> JSONResponse:
    try:
        with services.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001 - any failure means not ready; no detail to clients
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get("/metrics", summary="Prometheus metrics")
def metrics(request: Request, principal: CurrentPrincipal, services: ServicesDep) -> Response:
    allowed = any(services.policy.authorize(principal, p, Resource("config")).allowed
                  for p in (AUDIT_READ, CONFIG_MANAGE))
    if not allowed:
        raise ForbiddenError("not allowed: metrics")
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)
