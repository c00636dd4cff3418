"""Page routes: each screen checks, on the server, that the role may use it.

No session → the login page (with ``next``); a role without the permission →
an "Access denied" page (403).  The data behind each screen comes from APIs
that check again and audit.
"""

from __future__ import annotations

import html
from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from dicomvault.access.principal import Principal
from dicomvault.web.ui import pages
from dicomvault.web.ui.session import (
    can_administer,
    can_break_glass,
    can_read_audit,
    page_principal,
    safe_next,
)

router = APIRouter(prefix="/ui", include_in_schema=False)

#: Why the login page is shown (the ``reason`` query parameter): clear, PHI-free messages.
LOGIN_REASONS = {
    "session-idle": "Your session ended after a period of inactivity. Please sign in again.",
    "session-expired": "Your session reached its maximum length. Please sign in again.",
    "session-invalid": "Your session has ended. Please sign in again.",
    "session-ended": "Your session has ended. Please sign in again.",
    "mfa-required": "Please complete the second sign-in step.",
    "logged-out": "You have signed out.",
    "password-changed": "Your password was changed. Please sign in with the new password.",
}

_TILES = {
    "viewer": ("Studies", "Search and open studies in the diagnostic viewer."),
    "break-glass": ("Emergency access", "Open a study outside your care team, with a stated reason."),
    "admin": ("Administration", "Users, roles, care teams, API tokens and DICOM peers."),
    "audit": ("Audit", "Search the audit trail, check its integrity, account for disclosures."),
    "account": ("Account", "Password, two-factor recovery codes and your API tokens."),
}


def _screen(request: Request, allowed: Callable[[Principal], bool] | None, page: str, title: str,
            values: dict[str, str] | None = None) -> Response:
    principal, redirect = page_principal(request)
    if redirect is not None:
        return redirect
    assert principal is not None
    if allowed is not None and not allowed(principal):
        return pages.message_page(request, "Access denied",
                                  "Your role does not give access to this screen.", 403, principal)
    return pages.render(request, page=page, title=title, principal=principal, values=values)


@router.get("/")
def home(request: Request) -> Response:
    principal, redirect = page_principal(request)
    if redirect is not None:
        return redirect
    assert principal is not None
    tiles = []
    for key, href, _label in pages.nav_links(principal):
        if key in _TILES:
            name, text = _TILES[key]
            tiles.append(f'<a class="card tile" href="{href}" id="tile-{key}"><h2>{html.escape(name)}</h2>'
                         f'<p class="muted">{html.escape(text)}</p></a>')
    return pages.render(request, page="home", title="Start", principal=principal, script="common",
                        trusted_html={"tiles": "".join(tiles)})


@router.get("", include_in_schema=False)
def home_slash() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=308)


@router.get("/login")
def login(request: Request, next: str = "/ui/", reason: str = "") -> HTMLResponse:  # noqa: A002
    """Password, then TOTP (or enrolment with a QR code, or a required password change)."""
    settings = request.app.state.services.settings
    oidc = settings.oidc.enabled and bool(settings.oidc.issuer)
    return pages.render(request, page="login", title="Sign in", principal=None, values={
        "next": safe_next(next), "reason": LOGIN_REASONS.get(reason, ""),
        "oidc_hidden": "" if oidc else "hidden",
    })


@router.get("/account")
def account(request: Request) -> Response:
    return _screen(request, None, "account", "Account")


@router.get("/break-glass")
def break_glass(request: Request) -> Response:
    minutes = request.app.state.services.settings.security.break_glass_minutes
    return _screen(request, can_break_glass, "break-glass", "Emergency access",
                   {"minutes": str(minutes)})


@router.get("/admin")
def admin(request: Request) -> Response:
    return _screen(request, can_administer, "admin", "Administration")


@router.get("/audit")
def audit(request: Request) -> Response:
    return _screen(request, can_read_audit, "audit", "Audit")
