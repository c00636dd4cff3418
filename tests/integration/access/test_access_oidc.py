"""OpenID Connect SSO against a small real IdP running in a thread (no mocks of our code).

The IdP serves discovery, JWKS, an authorize endpoint that redirects with a
code, and a token endpoint that checks client authentication and the PKCE
verifier and returns an RS256-signed ID token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from dicomvault.access.oidc import OidcRelyingParty
from dicomvault.config import OidcSettings
from dicomvault.errors import ConfigurationError, NotAuthenticatedError

from .conftest import totp_now

CLIENT_ID = "dicomvault-test"
CLIENT_SECRET = "s3cret-" + "x" * 20
REDIRECT = "https://pacs.test:8443/auth/oidc/callback"


_KEYS = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]


class TinyIdp:
    def __init__(self) -> None:
        self.key, self.other_key = _KEYS
        self.kid = "k1"
        self.codes: dict[str, dict[str, Any]] = {}
        self.user: dict[str, Any] = {"sub": "u-1001", "preferred_username": "dr.house",
                                     "name": "G House", "groups": ["pacs-rad"], "amr": ["pwd", "otp"]}
        self.overrides: dict[str, Any] = {}
        self.sign_with_other = False
        self.token_requests: list[dict[str, list[str]]] = []
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                if url.path == "/.well-known/openid-configuration":
                    base = idp.issuer
                    self._json(200, {"issuer": base, "authorization_endpoint": base + "/authorize",
                                     "token_endpoint": base + "/token", "jwks_uri": base + "/jwks",
                                     "id_token_signing_alg_values_supported": ["RS256"]})
                elif url.path == "/jwks":
                    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(idp.key.public_key()))
                    jwk.update(kid=idp.kid, use="sig", alg="RS256")
                    self._json(200, {"keys": [jwk]})
                elif url.path == "/authorize":
                    q = {k: v[0] for k, v in parse_qs(url.query).items()}
                    ok = (q.get("client_id") == CLIENT_ID and q.get("response_type") == "code"
                          and q.get("code_challenge_method") == "S256" and "openid" in q.get("scope", ""))
                    if not ok:
                        self._json(400, {"error": "invalid_request"})
                        return
                    code = secrets.token_urlsafe(16)
                    idp.codes[code] = {"challenge": q["code_challenge"], "nonce": q["nonce"],
                                       "redirect_uri": q["redirect_uri"]}
                    self.send_response(302)
                    self.send_header("Location", q["redirect_uri"] + "?" + urlencode(
                        {"code": code, "state": q["state"]}))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self._json(404, {})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = parse_qs(self.rfile.read(length).decode())
                idp.token_requests.append(form)
                expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    self._json(401, {"error": "invalid_client"})
                    return
                code = form.get("code", [""])[0]
                entry = idp.codes.pop(code, None)
                verifier = form.get("code_verifier", [""])[0]
                digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
                if (entry is None or form.get("grant_type") != ["authorization_code"]
                        or form.get("redirect_uri", [""])[0] != entry["redirect_uri"]
                        or digest.decode() != entry["challenge"]):
                    self._json(400, {"error": "invalid_grant"})
                    return
                now = int(time.time())
                claims = {"iss": idp.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 300,
                          "nonce": entry["nonce"], **idp.user}
                claims.update(idp.overrides)
                key = idp.other_key if idp.sign_with_other else idp.key
                token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": idp.kid})
                self._json(200, {"access_token": "at", "token_type": "Bearer", "id_token": token})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> TinyIdp:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def idp() -> Iterator[TinyIdp]:
    with TinyIdp() as server:
        yield server


def _rp(idp: TinyIdp, **over: Any) -> OidcRelyingParty:
    settings = OidcSettings(enabled=True, issuer=idp.issuer, client_id=CLIENT_ID, redirect_uri=REDIRECT,
                            group_roles=("pacs-rad=radiologist", "pacs-res=researcher"), **over)
    return OidcRelyingParty(settings, client_secret=CLIENT_SECRET)


def _browser_login(rp: OidcRelyingParty):
    """Follow the authorize URL like a browser and return (pending, code, state)."""
    url, pending = rp.begin()
    query = parse_qs(urlparse(url).query)
    assert query["code_challenge_method"] == ["S256"] and query["nonce"] == [pending.nonce]
    assert "code_verifier" not in query
    response = httpx.get(url, follow_redirects=False)
    assert response.status_code == 302
    location = urlparse(response.headers["location"])
    assert location.geturl().startswith(REDIRECT)
    back = parse_qs(location.query)
    return pending, back["code"][0], back["state"][0]


def test_oidc_login_maps_groups_to_roles(idp):
    rp = _rp(idp)
    pending, code, state = _browser_login(rp)
    ident = rp.finish(pending, code, state)
    assert ident.subject == "u-1001" and ident.username == "dr.house"
    assert ident.roles == frozenset({"radiologist"}) and ident.mfa is True
    assert idp.token_requests[-1]["code_verifier"] == [pending.code_verifier]


def test_oidc_state_mismatch_refused(idp):
    rp = _rp(idp)
    pending, code, _ = _browser_login(rp)
    with pytest.raises(NotAuthenticatedError) as err:
        rp.finish(pending, code, "attacker-state")
    assert err.value.code == "oidc-state"


def test_oidc_code_with_wrong_verifier_refused(idp):
    """A stolen code redeemed with another login's PKCE verifier fails at the IdP."""
    rp = _rp(idp)
    pending, code, state = _browser_login(rp)
    other, _, _ = _browser_login(rp)
    forged = type(pending)(pending.state, pending.nonce, other.code_verifier, pending.created_at)
    with pytest.raises(NotAuthenticatedError) as err:
        rp.finish(forged, code, state)
    assert err.value.code == "oidc-code"


def test_oidc_code_replay_refused(idp):
    rp = _rp(idp)
    pending, code, state = _browser_login(rp)
    rp.finish(pending, code, state)
    with pytest.raises(NotAuthenticatedError):
        rp.finish(pending, code, state)


BAD_ID_TOKENS = [
    ("wrong-aud", {"aud": "someone-else"}, False),
    ("wrong-iss", {"iss": "http://127.0.0.1:1/evil"}, False),
    ("expired", {"exp": int(time.time()) - 600, "iat": int(time.time()) - 900}, False),
    ("future-iat", {"iat": int(time.time()) + 3600}, False),
    ("wrong-nonce", {"nonce": "replayed-nonce"}, False),
    ("bad-signature", {}, True),
]


@pytest.mark.parametrize(("case", "overrides", "other_key"), BAD_ID_TOKENS, ids=[c[0] for c in BAD_ID_TOKENS])
def test_oidc_bad_id_token_refused(idp, case, overrides, other_key):
    rp = _rp(idp)
    pending, code, state = _browser_login(rp)
    idp.overrides, idp.sign_with_other = overrides, other_key
    with pytest.raises(NotAuthenticatedError) as err:
        rp.finish(pending, code, state)
    assert err.value.code == "oidc-token"


def test_oidc_hmac_algorithm_not_configurable(idp):
    with pytest.raises(ConfigurationError):
        _rp(idp, algorithms=("HS256",))


def test_oidc_plain_http_remote_issuer_refused():
    with pytest.raises(ConfigurationError):
        OidcRelyingParty(OidcSettings(issuer="http://idp.example.org", client_id="c", redirect_uri=REDIRECT))


def test_oidc_login_creates_session_with_idp_mfa(idp, identity, audit):
    rp = _rp(idp)
    ident = rp.finish(*_browser_login(rp))
    step = identity.complete_oidc_login(ident, "10.0.0.1")
    assert step.status == "ok"
    principal = identity.principal_from_session(step.session.cookie)
    assert principal.name == "dr.house" and principal.roles == frozenset({"radiologist"})
    # A second login maps to the same account; a group change changes the roles.
    idp.user["groups"] = ["pacs-res"]
    again = identity.complete_oidc_login(rp.finish(*_browser_login(rp)), "10.0.0.1")
    assert identity.principal_from_session(again.session.cookie).id == principal.id
    assert identity.principal_from_session(again.session.cookie).roles == frozenset({"researcher"})


def test_oidc_phi_role_without_idp_mfa_needs_local_totp(idp, identity, clock):
    idp.user["amr"] = ["pwd"]
    rp = _rp(idp)
    step = identity.complete_oidc_login(rp.finish(*_browser_login(rp)), "10.0.0.1")
    assert step.status == "mfa_enrolment_required" and step.session is None
    enrolment = identity.begin_mfa_enrolment(step.challenge)
    issued, _ = identity.confirm_mfa_enrolment(step.challenge, totp_now(enrolment.secret, clock), "10.0.0.1")
    assert identity.principal_from_session(issued.cookie).mfa_verified


def test_oidc_unmapped_groups_refused(idp, identity):
    idp.user["groups"] = ["marketing"]
    rp = _rp(idp)
    with pytest.raises(NotAuthenticatedError) as err:
        identity.complete_oidc_login(rp.finish(*_browser_login(rp)), "10.0.0.1")
    assert err.value.code == "sso-no-role"
