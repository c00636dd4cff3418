"""The JSON login flow, sessions (cookie, CSRF, timeouts) and OAuth 2.0 over HTTP."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pyotp
import pytest

from dicomvault.access.identity import IdentityService
from dicomvault.access.principal import system_principal
from dicomvault.web.deps import SESSION_COOKIE
from tests.integration.web.conftest import FAST_HASHER

NEW_PASSWORD = "violet tangerine submarine 93"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def login_session(client, services, role: str, username: str, now=lambda: datetime.now(UTC)) -> dict:
    """Create an account and sign it in through every step of the JSON flow; returns the secrets."""
    created = services.identity.create_user(system_principal("cli"), username, {role})
    r = client.post("/api/auth/login", json={"username": username, "password": created.one_time_password})
    assert r.status_code == 200 and r.json()["status"] == "password_change_required"
    assert SESSION_COOKIE not in r.headers.get("set-cookie", "")
    r = client.post("/api/auth/password/initial", json={"challenge": r.json()["challenge"],
                                                         "new_password": NEW_PASSWORD})
    assert r.status_code == 200 and r.json()["status"] == "mfa_enrolment_required", r.text
    challenge = r.json()["challenge"]
    enrol = client.post("/api/auth/mfa/enrol", json={"challenge": challenge}).json()
    assert enrol["otpauth_uri"].startswith("otpauth://totp/") and "<svg" in enrol["qr_svg"]
    code = pyotp.TOTP(enrol["secret"]).at(now())
    r = client.post("/api/auth/mfa/enrol/confirm", json={"challenge": challenge, "code": code})
    assert r.status_code == 200, r.text
    return {"secret": enrol["secret"], "csrf_token": r.json()["csrf_token"], "code": code,
            "recovery": r.json()["recovery_codes"], "set_cookie": r.headers["set-cookie"]}


def use_clock(s, clock: Clock, settings=None) -> None:
    """Give the identity service a clock the test moves (sessions, TOTP steps)."""
    s.identity = IdentityService(s.session_factory, s.keyring, settings or s.settings,
                                 lambda events, session: s.audit.append(events, session),
                                 policy=s.policy, clock=clock, hasher=FAST_HASHER)


@pytest.fixture
def clock(web_services) -> Clock:
    clock = Clock()
    use_clock(web_services, clock)
    return clock


def test_login_flow_sets_strict_session_cookie_and_csrf(client, web_services):
    session = login_session(client, web_services, "radiologist", "rad1")
    cookie = session["set_cookie"].lower()
    assert cookie.startswith(SESSION_COOKIE.lower())
    for attribute in ("httponly", "secure", "samesite=strict", "path=/"):
        assert attribute in cookie
    r = client.get("/api/auth/session")
    assert r.status_code == 200 and r.json()["roles"] == ["radiologist"]
    assert r.json()["csrf_token"] == session["csrf_token"]
    assert client.get("/dicomweb/studies").status_code == 200


def test_password_alone_gives_no_session_for_phi_role(client, web_services, clock):
    session = login_session(client, web_services, "radiologist", "rad2", now=clock)
    client.cookies.clear()
    r = client.post("/api/auth/login", json={"username": "rad2", "password": NEW_PASSWORD})
    assert r.json()["status"] == "mfa_required" and "set-cookie" not in r.headers
    assert client.get("/dicomweb/studies").status_code == 401
    # The enrolment code is spent: replaying it is refused.
    r2 = client.post("/api/auth/mfa", json={"challenge": r.json()["challenge"], "code": session["code"]})
    assert r2.status_code == 401 and r2.headers["content-type"] == "application/problem+json"
    clock.advance(seconds=30)
    code = pyotp.TOTP(session["secret"]).at(clock())
    r3 = client.post("/api/auth/mfa", json={"challenge": r.json()["challenge"], "code": code})
    assert r3.status_code == 200
    assert client.get("/dicomweb/studies").status_code == 200


def test_unsafe_request_without_csrf_token_is_refused(client, web_services):
    session = login_session(client, web_services, "technologist", "tech1")
    r = client.post("/api/auth/logout-everywhere")
    assert r.status_code == 403 and r.json()["code"] == "csrf"
    r = client.post("/api/auth/logout-everywhere", headers={"X-CSRF-Token": "forged"})
    assert r.status_code == 403
    r = client.post("/api/auth/logout-everywhere", headers={"X-CSRF-Token": session["csrf_token"]})
    assert r.status_code == 200 and r.json()["sessions_ended"] >= 1


def test_forged_or_altered_cookie_is_401(client, web_services):
    login_session(client, web_services, "technologist", "tech2")
    good = client.cookies.get(SESSION_COOKIE)
    altered = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    for value in (altered, "forged", "a" * 2000):
        client.cookies.set(SESSION_COOKIE, value)
        r = client.get("/api/auth/session")
        assert r.status_code == 401, value


@pytest.mark.parametrize(("idle_minutes", "advance", "code"), [
    (15, {"minutes": 16}, "session-idle"),
    (100_000, {"hours": 13}, "session-expired"),
])
def test_timed_out_session_is_401(client, web_services, clock, idle_minutes, advance, code):
    security = dataclasses.replace(web_services.settings.security, session_idle_minutes=idle_minutes)
    use_clock(web_services, clock, dataclasses.replace(web_services.settings, security=security))
    login_session(client, web_services, "technologist", "tech3", now=clock)
    assert client.get("/api/auth/session").status_code == 200
    clock.advance(**advance)
    r = client.get("/api/auth/session")
    assert r.status_code == 401 and r.json()["code"] == code


def test_logout_ends_the_session(client, web_services):
    session = login_session(client, web_services, "technologist", "tech4")
    cookie = client.cookies.get(SESSION_COOKIE)
    assert client.post("/api/auth/logout", headers={"X-CSRF-Token": session["csrf_token"]}).status_code == 204
    client.cookies.set(SESSION_COOKIE, cookie)
    assert client.get("/api/auth/session").status_code == 401


def test_personal_token_created_from_session_works_as_bearer(client, web_services):
    session = login_session(client, web_services, "technologist", "tech5")
    r = client.post("/api/auth/tokens", json={"name": "script", "scopes": ["study:search"], "days": 1},
                    headers={"X-CSRF-Token": session["csrf_token"]})
    assert r.status_code == 201 and r.json()["token"].startswith("dv_")
    token = r.json()["token"]
    client.cookies.clear()
    assert client.get("/dicomweb/studies", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    r = client.post("/api/auth/tokens", json={"name": "too much", "scopes": ["user:manage"]},
                    headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401


def test_oauth_client_credentials_token_and_metadata(client, accounts):
    admin = accounts["admin"]
    r = client.post("/api/admin/oauth-clients", json={"name": "ai-node", "roles": ["service"],
                                                     "scopes": ["study:search", "study:read"]},
                    headers=admin.auth)
    assert r.status_code == 201
    cid, secret = r.json()["client_id"], r.json()["client_secret"]
    bad = client.post("/oauth2/token", data={"grant_type": "client_credentials", "client_id": cid,
                                             "client_secret": "wrong"})
    assert bad.status_code == 401 and bad.json() == {"error": "invalid_client"}
    r = client.post("/oauth2/token", data={"grant_type": "client_credentials", "scope": "study:search"},
                    auth=(cid, secret))
    assert r.status_code == 200 and r.json()["token_type"] == "Bearer"
    jwt = r.json()["access_token"]
    assert client.get("/dicomweb/studies", headers={"Authorization": f"Bearer {jwt}"}).status_code == 200
    intro = client.post("/oauth2/introspect", data={"token": jwt}, headers={"Authorization": f"Bearer {jwt}"})
    assert intro.json()["active"] is True and intro.json()["scope"] == "study:search"
    meta = client.get("/.well-known/oauth-authorization-server").json()
    assert meta["token_endpoint"].endswith("/oauth2/token")
    assert meta["introspection_endpoint"].endswith("/oauth2/introspect")
    r = client.post("/oauth2/token", data={"grant_type": "password"}, auth=(cid, secret))
    assert r.json() == {"error": "unsupported_grant_type"}
