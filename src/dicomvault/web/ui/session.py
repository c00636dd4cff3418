"""Who is looking at a page, and what each role may open (checked on the server)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import Request
from fastapi.responses import RedirectResponse

from dicomvault.access.permissions import (
    AUDIT_READ,
    BREAK_GLASS,
    PEER_MANAGE,
    STUDY_SEARCH,
    USER_MANAGE,
    Scope,
    scope_for,
)
from dicomvault.access.principal import Principal
from dicomvault.errors import NotAuthenticatedError
from dicomvault.web.deps import SESSION_COOKIE, client_address

LOGIN_PATH = "/ui/login"


def safe_next(target: str | None) -> str:
    """A same-origin path to return to after login (never another origin: open-redirect guard)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/ui/"
    if any(c in target for c in "\r\n\t") or len(target) > 2000:
        return "/ui/"
    return target


def login_redirect(request: Request, reason: str = "") -> RedirectResponse:
    """303 to the login page, remembering where the user was going."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    url = f"{LOGIN_PATH}?next={quote(safe_next(here), safe='')}"
    if reason:
        url += f"&reason={quote(reason)}"
    return RedirectResponse(url, status_code=303)


def session_cookie(request: Request) -> str | None:
    cookie = request.cookies.get(SESSION_COOKIE)
    return cookie if cookie and len(cookie) <= 1024 else None


def page_principal(request: Request) -> tuple[Principal | None, RedirectResponse | None]:
    """The session's principal, or a redirect to login (expired, idle, missing or revoked session)."""
    cookie = session_cookie(request)
    if cookie is None:
        return None, login_redirect(request)
    services = request.app.state.services
    try:
        principal: Principal = services.identity.principal_from_session(
            cookie, client_address(request), "ui")
    except NotAuthenticatedError as exc:
        return None, login_redirect(request, exc.code)
    return principal, None


def _has(principal: Principal, permission: str) -> bool:
    return scope_for(principal.roles, permission) is not Scope.NONE


def can_view_studies(principal: Principal) -> bool:
    """Study search in some scope, or an active break-the-glass grant."""
    return _has(principal, STUDY_SEARCH) or bool(principal.break_glass)


def can_break_glass(principal: Principal) -> bool:
    return _has(principal, BREAK_GLASS)


def can_administer(principal: Principal) -> bool:
    return _has(principal, USER_MANAGE) or _has(principal, PEER_MANAGE)


def can_read_audit(principal: Principal) -> bool:
    return _has(principal, AUDIT_READ)
