"""Our pages over the real app (TestClient, real services on SQLite): guards, CSP, OIDC button,
viewer install state and path handling — no browser needed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from dicomvault.config import load_settings
from dicomvault.services.context import build_services
from dicomvault.services.setup import initialise
from dicomvault.web.app import create_app
from dicomvault.web.ui.csp import OHIF_CSP, UI_CSP

OIDC = {"DICOMVAULT_OIDC__ENABLED": "true", "DICOMVAULT_OIDC__ISSUER": "https://idp.example.org",
        "DICOMVAULT_OIDC__CLIENT_ID": "dicomvault",
        "DICOMVAULT_OIDC__REDIRECT_URI": "https://pacs.example.org/auth/oidc/callback"}

#: (path, expected status, where a redirect goes) without a session.
ANONYMOUS = [
    ("/", 303, "/ui/"),
    ("/ui/", 303, "/ui/login?next=%2Fui%2F"),
    ("/ui/admin", 303, "/ui/login?next=%2Fui%2Fadmin"),
    ("/ui/audit", 303, "/ui/login?next=%2Fui%2Faudit"),
    ("/ui/break-glass", 303, "/ui/login?next=%2Fui%2Fbreak-glass"),
    ("/ui/account", 303, "/ui/login?next=%2Fui%2Faccount"),
    ("/ui/login", 200, None),
    ("/ui/static/app.css", 200, None),
    ("/ui/static/login.js", 200, None),
    ("/ui/static/..%2F..%2Fpages.py", 404, None),
    ("/ui/static/.hidden.js", 404, None),
    ("/ui/api/session", 401, None),
]


def _client(tmp_path: Path, **env: str) -> Iterator[TestClient]:
    environ = {"DICOMVAULT_DATA_DIR": str(tmp_path / "data"),
               "DICOMVAULT_OHIF_DIR": str(tmp_path / "no-ohif"), **env}
    settings = load_settings(None, environ)
    initialise(settings, environ)
    services = build_services(settings, environ=environ)
    try:
        with TestClient(create_app(services), base_url="https://testserver") as client:
            yield client
    finally:
        services.close()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    yield from _client(tmp_path)


@pytest.mark.parametrize(("path", "status", "location"), ANONYMOUS)
def test_page_without_session_is_refused_or_redirected_to_login(client: TestClient, path: str, status: int,
                                                                 location: str | None) -> None:
    r = client.get(path, follow_redirects=False)
    assert r.status_code == status
    if location is not None:
        assert r.headers["location"] == location


def test_login_page_has_strict_csp_and_no_inline_code(client: TestClient) -> None:
    r = client.get("/ui/login?next=https://evil.example/&reason=session-idle")
    assert r.headers["content-security-policy"] == UI_CSP
    assert "<script>" not in r.text and " style=" not in r.text and " on" + "click=" not in r.text
    assert 'data-next="/ui/"' in r.text  # an off-site next is replaced
    assert "inactivity" in r.text
    assert 'id="oidc" hidden' in r.text


def test_login_page_offers_single_sign_on_when_configured(tmp_path: Path) -> None:
    for client in _client(tmp_path, **OIDC):
        r = client.get("/ui/login")
        assert '<div id="oidc" >' in r.text
        assert 'href="/auth/oidc/login"' in r.text


def test_viewer_not_installed_says_so(client: TestClient) -> None:
    r = client.get("/viewer/", follow_redirects=False)
    assert r.status_code == 503
    assert "dicomvault viewer install" in r.text
    assert r.headers["content-security-policy"] == UI_CSP


def test_viewer_config_is_same_origin_with_ohif_policy(client: TestClient) -> None:
    r = client.get("/viewer/app-config.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert r.headers["content-security-policy"] == OHIF_CSP
    assert r.headers["cross-origin-embedder-policy"] == "require-corp"
    assert '"qidoRoot": "/dicomweb"' in r.text
