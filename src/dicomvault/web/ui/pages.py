"""Server-rendered HTML shells for our pages (no inline script or style: strict CSP).

Each page is ``templates/layout.html`` around a fragment ``templates/<name>.html``
and one ES module ``static/<name>.js``.  Values are HTML-escaped; titles are
generic (never PHI); the CSRF token and idle timeout travel as ``<meta>`` /
``data-`` attributes for the scripts.
"""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path
from string import Template

from fastapi import Request
from fastapi.responses import HTMLResponse

from dicomvault.access.principal import Principal
from dicomvault.web.ui.csp import UI_CSP
from dicomvault.web.ui.session import (
    can_administer,
    can_break_glass,
    can_read_audit,
    can_view_studies,
    session_cookie,
)

TEMPLATES = Path(__file__).parent / "templates"


@cache
def _template(name: str) -> Template:
    return Template((TEMPLATES / name).read_text(encoding="utf-8"))


def nav_links(principal: Principal) -> list[tuple[str, str, str]]:
    """(key, href, label) of the screens this principal may open."""
    links = [("home", "/ui/", "Home")]
    if can_view_studies(principal):
        links.append(("viewer", "/viewer/", "Studies"))
    if can_break_glass(principal):
        links.append(("break-glass", "/ui/break-glass", "Emergency access"))
    if can_administer(principal):
        links.append(("admin", "/ui/admin", "Administration"))
    if can_read_audit(principal):
        links.append(("audit", "/ui/audit", "Audit"))
    links.append(("account", "/ui/account", "Account"))
    return links


def _nav(principal: Principal | None, current: str) -> str:
    if principal is None:
        return ""
    parts = []
    for key, href, label in nav_links(principal):
        here = ' aria-current="page"' if key == current else ""
        parts.append(f'<a href="{href}"{here}>{html.escape(label)}</a>')
    return "".join(parts)


def render(request: Request, *, page: str, title: str, principal: Principal | None,
           values: dict[str, str] | None = None, status: int = 200, script: str | None = None,
           trusted_html: dict[str, str] | None = None) -> HTMLResponse:
    """A full page: layout + fragment ``templates/<page>.html`` + module ``static/<script>.js``.

    ``values`` are escaped; ``trusted_html`` is markup built here from escaped parts.
    """
    request.state.csp = UI_CSP
    services = request.app.state.services
    csrf = ""
    cookie = session_cookie(request)
    if principal is not None and cookie:
        csrf = services.identity.sessions.csrf_token_for(cookie)
    escaped = {k: html.escape(v, quote=True) for k, v in (values or {}).items()}
    escaped.update(trusted_html or {})
    fragment = _template(f"{page}.html").safe_substitute(escaped)
    who = ""
    if principal is not None:
        who = (f'<span class="mono">{html.escape(principal.name)}</span>'
               f'<span class="badge">{html.escape(", ".join(sorted(principal.roles)))}</span>'
               '<button id="logout" type="button" class="secondary">Sign out</button>')
    body = _template("layout.html").substitute(
        title=html.escape(title), csrf=html.escape(csrf), nav=_nav(principal, page), who=who,
        content=fragment, script=html.escape(script or page),
        idle=str(services.settings.security.session_idle_minutes * 60 if principal else 0),
        page=html.escape(page),
    )
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def message_page(request: Request, title: str, message: str, status: int,
                 principal: Principal | None = None) -> HTMLResponse:
    """An error or notice page (access denied, not installed) with a way back."""
    return render(request, page="message", title=title, principal=principal, status=status,
                  values={"heading": title, "message": message}, script="common")
