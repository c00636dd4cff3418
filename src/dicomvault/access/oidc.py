"""OpenID Connect relying party: authorization code flow with PKCE.

Implements OpenID Connect Core 1.0 3.1 (authorization code flow), Discovery
1.0 4, RFC 7636 (PKCE, method S256) and ID-token validation (Core 3.1.3.7):
signature by a key from the IdP's JWKS (algorithms restricted by
configuration, never ``none`` or HMAC), ``iss``, ``aud`` (and ``azp``),
``exp``/``iat`` against the injected clock, and ``nonce``.  IdP groups map to
dicomvault roles through ``oidc.group_roles``.

``begin()`` returns the authorize URL and a ``PendingLogin`` (state, nonce,
PKCE verifier) that the web layer keeps for the callback (``to_cookie`` MACs
it under the session key, so it needs no server-side storage).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote_plus, urlencode, urlparse

import httpx
import jwt

from dicomvault.access.permissions import ROLE_PERMISSIONS
from dicomvault.config import OidcSettings
from dicomvault.crypto.keyring import Keyring
from dicomvault.errors import ConfigurationError, NotAuthenticatedError, UnavailableError

PENDING_SECONDS = 600
_FORBIDDEN_ALGS = {"none", "HS256", "HS384", "HS512"}
#: ``amr`` values (RFC 8176) that show the IdP verified more than a password.
MFA_AMR = frozenset({"mfa", "otp", "hwk", "swk", "sc", "fpt", "face", "iris", "retina", "vbm"})
JWKS_CACHE_SECONDS = 300


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 4.2 S256 code challenge."""
    return _b64(hashlib.sha256(verifier.encode("ascii")).digest())


def parse_group_roles(pairs: tuple[str, ...]) -> dict[str, frozenset[str]]:
    """``("grp=role", ...)`` → group → roles; refuses unknown roles (fail fast)."""
    out: dict[str, set[str]] = {}
    for pair in pairs:
        group, sep, role = pair.partition("=")
        if not sep or not group.strip() or role.strip() not in ROLE_PERMISSIONS:
            raise ConfigurationError(f"oidc.group_roles: bad entry {pair!r} (want group=role)")
        out.setdefault(group.strip(), set()).add(role.strip())
    return {k: frozenset(v) for k, v in out.items()}


@dataclass(frozen=True)
class PendingLogin:
    """State carried from the authorize redirect to the callback."""

    state: str
    nonce: str
    code_verifier: str
    created_at: float

    def to_cookie(self, keyring: Keyring) -> str:
        body = _b64(json.dumps(asdict(self), separators=(",", ":")).encode())
        mac = _b64(keyring.hmac(keyring.session_key, b"oidc-pending|" + body.encode()))
        return f"{body}.{mac}"

    @classmethod
    def from_cookie(cls, keyring: Keyring, value: str, now: float) -> PendingLogin:
        try:
            body, mac = value.split(".", 1)
            expected = _b64(keyring.hmac(keyring.session_key, b"oidc-pending|" + body.encode()))
            if not hmac.compare_digest(mac, expected):
                raise ValueError
            pending = cls(**json.loads(_unb64(body)))
        except (ValueError, TypeError, json.JSONDecodeError):
            raise NotAuthenticatedError("invalid login state", code="oidc-state") from None
        if now - pending.created_at > PENDING_SECONDS:
            raise NotAuthenticatedError("login took too long; start again", code="oidc-state")
        return pending


@dataclass(frozen=True)
class OidcIdentity:
    """The verified result of an SSO login."""

    issuer: str
    subject: str
    username: str
    name: str
    email: str
    groups: frozenset[str]
    roles: frozenset[str]
    #: The IdP asserted a multi-factor login (RFC 8176 ``amr``).
    mfa: bool
    claims: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


class OidcRelyingParty:
    """One configured IdP.  ``client_secret`` comes from the environment via the caller."""

    def __init__(
        self,
        settings: OidcSettings,
        client_secret: str = "",
        clock: Callable[[], datetime] | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        if not settings.issuer or not settings.client_id or not settings.redirect_uri:
            raise ConfigurationError("oidc: issuer, client_id and redirect_uri are required")
        self._check_url(settings.issuer, "oidc.issuer")
        bad = set(settings.algorithms) & _FORBIDDEN_ALGS
        if bad:
            raise ConfigurationError(f"oidc.algorithms: not allowed for ID tokens: {sorted(bad)}")
        self.settings = settings
        self._secret = client_secret
        self._clock = clock
        self._http = http or httpx.Client(timeout=settings.http_timeout_seconds)
        self._group_roles = parse_group_roles(settings.group_roles)
        self._metadata: dict[str, Any] | None = None
        self._jwks: dict[str, Any] | None = None
        self._jwks_at = 0.0

    @staticmethod
    def _check_url(url: str, where: str) -> None:
        parsed = urlparse(url)
        local = parsed.hostname in ("localhost", "127.0.0.1", "::1")
        if parsed.scheme != "https" and not (parsed.scheme == "http" and local):
            raise ConfigurationError(f"{where}: must be an https URL")

    def _now(self) -> float:
        return self._clock().timestamp() if self._clock else time.time()

    # -- discovery ---------------------------------------------------------------
    def _get_json(self, url: str) -> dict[str, Any]:
        self._check_url(url, "oidc endpoint")
        try:
            response = self._http.get(url)
            response.raise_for_status()
            data = response.json()
        except (httpx.HTTPError, ValueError):
            raise UnavailableError("the identity provider is unavailable") from None
        if not isinstance(data, dict):
            raise UnavailableError("the identity provider sent an invalid document")
        return data

    def metadata(self) -> dict[str, Any]:
        """OpenID Provider metadata (Discovery 1.0 4); ``issuer`` must match exactly."""
        if self._metadata is None:
            issuer = self.settings.issuer.rstrip("/")
            data = self._get_json(issuer + "/.well-known/openid-configuration")
            if data.get("issuer", "").rstrip("/") != issuer:
                raise UnavailableError("the identity provider's issuer does not match")
            for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(data.get(key), str):
                    raise UnavailableError("the identity provider metadata is incomplete")
            self._metadata = data
        return self._metadata

    def _jwk_set(self, refresh: bool = False) -> dict[str, Any]:
        if refresh or self._jwks is None or time.monotonic() - self._jwks_at > JWKS_CACHE_SECONDS:
            self._jwks = self._get_json(self.metadata()["jwks_uri"])
            self._jwks_at = time.monotonic()
        return self._jwks

    def _signing_key(self, kid: str | None, alg: str) -> Any:
        for refresh in (False, True):  # unknown kid: the IdP may have rotated keys
            for raw in self._jwk_set(refresh).get("keys", []):
                if kid is not None and raw.get("kid") != kid:
                    continue
                if raw.get("use", "sig") != "sig":
                    continue
                try:
                    return jwt.PyJWK(raw, algorithm=alg).key
                except jwt.PyJWTError:
                    continue
        raise NotAuthenticatedError("ID token signed by an unknown key", code="oidc-token")

    # -- the flow -------------------------------------------------------------------
    def begin(self) -> tuple[str, PendingLogin]:
        """The authorization request URL (Core 3.1.2.1) with state, nonce and S256 PKCE."""
        pending = PendingLogin(
            state=_b64(secrets.token_bytes(32)), nonce=_b64(secrets.token_bytes(32)),
            code_verifier=_b64(secrets.token_bytes(48)), created_at=self._now(),
        )
        params = {
            "response_type": "code", "client_id": self.settings.client_id,
            "redirect_uri": self.settings.redirect_uri, "scope": " ".join(self.settings.scopes),
            "state": pending.state, "nonce": pending.nonce,
            "code_challenge": pkce_challenge(pending.code_verifier), "code_challenge_method": "S256",
        }
        endpoint = self.metadata()["authorization_endpoint"]
        sep = "&" if "?" in endpoint else "?"
        return f"{endpoint}{sep}{urlencode(params)}", pending

    def finish(self, pending: PendingLogin, code: str, state: str) -> OidcIdentity:
        """Check ``state``, redeem the code (Core 3.1.3) and validate the ID token."""
        if not state or not hmac.compare_digest(state, pending.state):
            raise NotAuthenticatedError("login state mismatch", code="oidc-state")
        if self._now() - pending.created_at > PENDING_SECONDS:
            raise NotAuthenticatedError("login took too long; start again", code="oidc-state")
        form = {
            "grant_type": "authorization_code", "code": code,
            "redirect_uri": self.settings.redirect_uri, "code_verifier": pending.code_verifier,
            "client_id": self.settings.client_id,
        }
        headers = {"Accept": "application/json"}
        if self._secret:  # client_secret_basic (RFC 6749 2.3.1)
            pair = f"{quote_plus(self.settings.client_id)}:{quote_plus(self._secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        token_url = self.metadata()["token_endpoint"]
        self._check_url(token_url, "oidc token endpoint")
        try:
            response = self._http.post(token_url, data=form, headers=headers)
        except httpx.HTTPError:
            raise UnavailableError("the identity provider is unavailable") from None
        if response.status_code != 200:
            raise NotAuthenticatedError("the identity provider refused the code", code="oidc-code")
        try:
            id_token = response.json()["id_token"]
        except (ValueError, KeyError, TypeError):
            raise NotAuthenticatedError("no ID token in the response", code="oidc-token") from None
        return self.validate_id_token(str(id_token), pending.nonce)

    def validate_id_token(self, id_token: str, nonce: str) -> OidcIdentity:
        """OpenID Connect Core 3.1.3.7 ID-token validation."""
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError:
            raise NotAuthenticatedError("malformed ID token", code="oidc-token") from None
        alg = header.get("alg", "")
        if alg not in self.settings.algorithms:
            raise NotAuthenticatedError("ID token algorithm not accepted", code="oidc-token")
        key = self._signing_key(header.get("kid"), alg)
        try:
            claims = jwt.decode(
                id_token, key, algorithms=[alg], audience=self.settings.client_id,
                issuer=self.metadata()["issuer"],
                options={"require": ["iss", "sub", "aud", "exp", "iat"], "verify_exp": False,
                         "verify_iat": False, "verify_nbf": False},
            )
        except jwt.PyJWTError:
            raise NotAuthenticatedError("invalid ID token", code="oidc-token") from None
        now = self._now()
        if now >= float(claims["exp"]) + 30 or float(claims["iat"]) > now + 30:
            raise NotAuthenticatedError("ID token expired or not yet valid", code="oidc-token")
        if "nbf" in claims and float(claims["nbf"]) > now + 30:
            raise NotAuthenticatedError("ID token not yet valid", code="oidc-token")
        aud = claims["aud"]
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != self.settings.client_id:
            raise NotAuthenticatedError("ID token azp mismatch", code="oidc-token")
        if not isinstance(claims.get("nonce"), str) or not hmac.compare_digest(claims["nonce"], nonce):
            raise NotAuthenticatedError("ID token nonce mismatch", code="oidc-token")
        groups_raw = claims.get(self.settings.groups_claim, [])
        groups = frozenset(str(g) for g in groups_raw) if isinstance(groups_raw, list) else frozenset()
        roles: set[str] = set()
        for group in groups:
            roles |= self._group_roles.get(group, frozenset())
        amr = claims.get("amr", [])
        mfa = isinstance(amr, list) and bool(MFA_AMR & {str(a) for a in amr})
        username = str(claims.get(self.settings.username_claim) or claims["sub"])
        return OidcIdentity(
            issuer=str(claims["iss"]), subject=str(claims["sub"]), username=username[:64],
            name=str(claims.get("name", "")), email=str(claims.get("email", "")),
            groups=groups, roles=frozenset(roles), mfa=mfa, claims=dict(claims),
        )
