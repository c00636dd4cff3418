"""Injected things for the routers (``Annotated`` aliases).

``CurrentPrincipal`` authenticates the request through ``services.identity``:
``Authorization: Bearer`` (a ``dv_`` personal token or a server-issued JWT,
IHE IUA ITI-72) or the session cookie; with the cookie, unsafe methods also
need the synchroniser CSRF token in ``X-CSRF-Token`` (OWASP).  No credential
→ ``NotAuthenticatedError`` (401).  The dependencies are sync so FastAPI runs
their database work in the thread pool.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from dicomvault.access.principal import Principal
from dicomvault.access.sessions import COOKIE_NAME
from dicomvault.errors import NotAuthenticatedError
from dicomvault.services.context import Services

SESSION_COOKIE = COOKIE_NAME
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_services(request: Request) -> Services:
    """The application's services (no I/O: resolved on the event loop, not in the thread pool)."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def client_address(request: Request) -> str | None:
    """The peer's IP address (for audit and login throttling)."""
    return request.client.host if request.client else None


def door_of(request: Request) -> str:
    """Which door a request came through, for audit records."""
    path: str = request.scope["path"]  # request.url would build a full URL object per request
    if path.startswith("/dicomweb"):
        return "dicomweb"
    if path.startswith(("/api/admin", "/oauth2", "/metrics")):
        return "rest"
    return "ui"


def current_principal(request: Request, services: ServicesDep) -> Principal:
    """Bearer token or session cookie (+ CSRF on unsafe methods) → principal, else 401."""
    address = client_address(request)
    door = door_of(request)
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 8192:
            raise NotAuthenticatedError("use 'Authorization: Bearer <token>'", code="auth-scheme")
        principal = services.identity.principal_from_bearer(token, address, door)
    else:
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie or len(cookie) > 1024:
            raise NotAuthenticatedError("authentication required", code="not-authenticated")
        principal = services.identity.principal_from_session(cookie, address, door)
        if request.method not in SAFE_METHODS:
            services.identity.csrf_check(cookie, request.headers.get(CSRF_HEADER))
    request.state.principal_id = principal.id
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
