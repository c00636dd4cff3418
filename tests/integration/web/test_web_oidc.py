"""OpenID Connect single sign-on through the HTTP routes, against the small real IdP of the access tests."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from dicomvault.web.deps import SESSION_COOKIE
from dicomvault.web.routers.auth import OIDC_COOKIE
from tests.integration.access.test_access_oidc import TinyIdp, _rp


@pytest.fixture
def idp():
    with TinyIdp() as server:
        yield server


def _authorize(client, idp) -> tuple[str, str]:
    r = client.get("/auth/oidc/login", follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"].startswith(idp.issuer + "/authorize")
    assert OIDC_COOKIE in r.headers["set-cookie"]
    back = httpx.get(r.headers["location"], follow_redirects=False)
    query = parse_qs(urlparse(back.headers["location"]).query)
    return query["code"][0], query["state"][0]


def test_sso_login_starts_session_with_mapped_role(client, idp):
    client.app.state.oidc = _rp(idp)
    code, state = _authorize(client, idp)
    r = client.get("/auth/oidc/callback", params={"code": code, "state": state}, follow_redirects=False)
    assert r.status_code == 303 and SESSION_COOKIE in r.headers["set-cookie"]
    session = client.get("/api/auth/session")
    assert session.status_code == 200 and session.json()["roles"] == ["radiologist"]
    assert client.get("/dicomweb/studies").status_code == 200


def test_sso_callback_with_forged_state_is_401(client, idp):
    client.app.state.oidc = _rp(idp)
    code, _ = _authorize(client, idp)
    r = client.get("/auth/oidc/callback", params={"code": code, "state": "forged"}, follow_redirects=False)
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    assert client.get("/api/auth/session").status_code == 401


def test_sso_routes_are_404_when_not_configured(client):
    assert client.get("/auth/oidc/login", follow_redirects=False).status_code == 404
