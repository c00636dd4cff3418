"""Personal API tokens and OAuth 2.0 bearer tokens for machine clients.

Personal tokens (``dv_<43 base64url chars>``, 256 random bits) are stored as
HMAC-SHA-256 digests under ``keyring.token_key``; each carries scopes (a subset
of ``permissions.ALL_PERMISSIONS``), an expiry and can be revoked.

Machine clients use the OAuth 2.0 client-credentials grant (RFC 6749 4.4):
the server issues a JWT (RFC 9068 profile; HS256 under a key derived from the
token key) with ``iss``/``aud``/``exp``/``nbf``/``iat``/``scope``/``client_id``.
Verification checks all of them against an injected clock; expired,
not-yet-valid, wrong-audience and bad-signature tokens raise
``NotAuthenticatedError`` (IHE IUA ITI-72).  ``introspection_response``
(RFC 7662, ITI-102) and ``authorization_server_metadata`` (RFC 8414, ITI-103)
build the documents the web layer serves.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import jwt
from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from dicomvault.access.models import ApiToken, OAuthClient, join_set, split_set
from dicomvault.access.permissions import ALL_PERMISSIONS, ROLE_PERMISSIONS
from dicomvault.crypto.keyring import Keyring
from dicomvault.errors import InvalidInputError, NotAuthenticatedError

TOKEN_PREFIX = "dv_"  # noqa: S105 - a public prefix, not a secret
JWT_ALGORITHM = "HS256"
ACCESS_TOKEN_SECONDS = 900
MAX_TOKEN_DAYS = 365
#: ``last_used_at`` of a personal token is written at most this often.
TOUCH_INTERVAL = timedelta(minutes=1)

_TOKENS = cast(Table, ApiToken.__table__)
_PERSONAL_BY_DIGEST = select(
    _TOKENS.c.id, _TOKENS.c.user_id, _TOKENS.c.scopes, _TOKENS.c.expires_at, _TOKENS.c.revoked_at,
    _TOKENS.c.last_used_at).where(_TOKENS.c.token_hash == bindparam("b_hash"))
_TOUCH_PERSONAL = update(_TOKENS).where(_TOKENS.c.id == bindparam("b_id")).values(
    last_used_at=bindparam("b_now"))
#: Clock skew tolerated for ``exp``/``nbf``/``iat``.
LEEWAY = timedelta(seconds=30)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def validate_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """Scopes are permission names (``study:read``...); refuse unknown ones."""
    wanted = frozenset(s for s in scopes if s)
    unknown = wanted - ALL_PERMISSIONS
    if unknown:
        raise InvalidInputError(f"unknown scope(s): {sorted(unknown)}", code="invalid-scope")
    return wanted


def permissions_of(roles: Iterable[str]) -> frozenset[str]:
    out: set[str] = set()
    for role in roles:
        out |= set(ROLE_PERMISSIONS.get(role, {}))
    return frozenset(out)


@dataclass(frozen=True)
class TokenIdentity:
    """Who a verified bearer credential stands for."""

    kind: str  # "personal" or "client"
    subject: str  # user id or client id
    scopes: frozenset[str]
    token_id: str  # api token id or JWT jti
    roles: frozenset[str] = frozenset()
    expires_at: datetime | None = None
    #: For personal tokens: when it was last used (before this use).
    last_used_at: datetime | None = None


@dataclass(frozen=True)
class IssuedToken:
    token: str
    token_id: str
    expires_at: datetime
    scopes: frozenset[str]


class TokenService:
    """Issue, verify, revoke and introspect bearer credentials."""

    def __init__(
        self, keyring: Keyring, issuer: str, audience: str, clock: Callable[[], datetime]
    ) -> None:
        self._keyring = keyring
        self.issuer = issuer
        self.audience = audience
        self._clock = clock
        self._jwt_key = keyring.hmac(keyring.token_key, b"dicomvault/v1/oauth-jwt-hs256")

    def _digest(self, label: str, secret: str) -> str:
        return self._keyring.hmac(self._keyring.token_key, f"{label}|{secret}".encode()).hex()

    # -- personal API tokens -----------------------------------------------------
    def create_personal(
        self, session: Session, user_id: str, user_roles: frozenset[str], name: str,
        scopes: Iterable[str], days: int = 90,
    ) -> IssuedToken:
        """A new personal token; the plaintext is returned once and never stored."""
        wanted = validate_scopes(scopes)
        if not wanted:
            raise InvalidInputError("a token needs at least one scope", code="invalid-scope")
        beyond = wanted - permissions_of(user_roles)
        if beyond:
            raise InvalidInputError(
                f"scope(s) beyond the user's roles: {sorted(beyond)}", code="invalid-scope"
            )
        if not 1 <= days <= MAX_TOKEN_DAYS:
            raise InvalidInputError(f"token lifetime must be 1-{MAX_TOKEN_DAYS} days", code="invalid-expiry")
        token = TOKEN_PREFIX + _b64(secrets.token_bytes(32))
        now = self._clock()
        row = ApiToken(
            user_id=user_id, name=name[:100], token_hash=self._digest("api-token", token),
            scopes=join_set(wanted), created_at=now, expires_at=now + timedelta(days=days),
        )
        session.add(row)
        session.flush()
        return IssuedToken(token, row.id, row.expires_at, wanted)

    def verify_personal(self, session: Session, token: str, *, touch: bool = True) -> TokenIdentity:
        """Look a ``dv_`` token up by digest; refuse unknown, revoked or expired ones.

        ``touch`` records the use (at most once a minute); pass False in read-only sessions.
        """
        # Prebuilt Core statements: every bearer request runs this.
        conn = session.connection()
        row = conn.execute(_PERSONAL_BY_DIGEST, {"b_hash": self.personal_digest(token)}).first()
        now = self._clock()
        ident = self.personal_identity(row, now)
        last_used = ident.last_used_at
        if touch and (last_used is None or now - last_used > TOUCH_INTERVAL):
            conn.execute(_TOUCH_PERSONAL, {"b_id": ident.token_id, "b_now": now})
        return ident

    def personal_digest(self, token: str) -> str:
        """The stored digest of a ``dv_`` token; refuses anything not shaped like one."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
            raise NotAuthenticatedError("invalid token", code="token-invalid")
        return self._digest("api-token", token)

    @staticmethod
    def personal_identity(row: Any, now: datetime) -> TokenIdentity:
        """A looked-up token row (``id, user_id, scopes, expires_at, revoked_at,
        last_used_at``; ``None`` when no token has the digest) → its identity, or refused."""
        if row is None:
            raise NotAuthenticatedError("invalid token", code="token-invalid")
        if row.revoked_at is not None:
            raise NotAuthenticatedError("token revoked", code="token-revoked")
        if now >= row.expires_at:
            raise NotAuthenticatedError("token expired", code="token-expired")
        return TokenIdentity("personal", row.user_id, split_set(row.scopes), row.id,
                             expires_at=row.expires_at, last_used_at=row.last_used_at)

    def revoke_personal(self, session: Session, token_id: str, user_id: str | None = None) -> bool:
        """Revoke a token (only the owner's when ``user_id`` is given)."""
        row = session.get(ApiToken, token_id)
        if row is None or (user_id is not None and row.user_id != user_id):
            return False
        if row.revoked_at is None:
            row.revoked_at = self._clock()
        return True

    def list_personal(self, session: Session, user_id: str) -> list[ApiToken]:
        return list(session.execute(
            select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.created_at)
        ).scalars())

    # -- OAuth 2.0 clients (RFC 6749 4.4) ----------------------------------------
    def create_client(
        self, session: Session, name: str, roles: frozenset[str], scopes: Iterable[str]
    ) -> tuple[str, str]:
        """Register a machine client; returns (client_id, client_secret) once."""
        wanted = validate_scopes(scopes) or permissions_of(roles)
        beyond = wanted - permissions_of(roles)
        if beyond:
            raise InvalidInputError(f"scope(s) beyond the roles: {sorted(beyond)}", code="invalid-scope")
        client_id = "dvc_" + secrets.token_hex(8)
        secret = _b64(secrets.token_bytes(32))
        session.add(OAuthClient(
            client_id=client_id, name=name[:100], secret_hash=self._digest("client", secret),
            roles=join_set(roles), scopes=join_set(wanted),
        ))
        session.flush()
        return client_id, secret

    def _client(self, session: Session, client_id: str) -> OAuthClient | None:
        row = session.get(OAuthClient, client_id) if len(client_id) <= 64 else None
        return row if row is not None and row.enabled else None

    def issue_client_token(
        self, session: Session, client_id: str, client_secret: str, scope: str | None = None
    ) -> dict[str, Any]:
        """Client-credentials grant: the RFC 6749 5.1 token response."""
        row = self._client(session, client_id)
        expected = row.secret_hash if row else self._digest("client", "x")
        if row is None or not hmac.compare_digest(expected, self._digest("client", client_secret)):
            raise NotAuthenticatedError("invalid client", code="invalid-client")
        allowed = split_set(row.scopes)
        requested = frozenset(scope.split()) if scope else allowed
        if not requested <= allowed:
            raise InvalidInputError("requested scope exceeds the client's", code="invalid-scope")
        now = self._clock()
        claims = {
            "iss": self.issuer, "aud": self.audience, "sub": f"client:{row.client_id}",
            "client_id": row.client_id, "scope": " ".join(sorted(requested)),
            "iat": int(now.timestamp()), "nbf": int(now.timestamp()),
            "exp": int(now.timestamp()) + ACCESS_TOKEN_SECONDS, "jti": secrets.token_hex(16),
        }
        token = jwt.encode(claims, self._jwt_key, algorithm=JWT_ALGORITHM,
                           headers={"typ": "at+jwt"})
        return {"access_token": token, "token_type": "Bearer", "expires_in": ACCESS_TOKEN_SECONDS,
                "scope": claims["scope"]}

    def sign_claims(self, claims: dict[str, Any]) -> str:
        """Sign arbitrary claims with the server key (tests and trusted internal issuers)."""
        return jwt.encode(claims, self._jwt_key, algorithm=JWT_ALGORITHM, headers={"typ": "at+jwt"})

    def verify_jwt(self, session: Session, token: str) -> TokenIdentity:
        """RFC 7519/9068 validation: signature, iss, aud, exp, nbf, iat; client still enabled."""
        try:
            claims = jwt.decode(
                token, self._jwt_key, algorithms=[JWT_ALGORITHM], audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "nbf", "iat", "iss", "aud", "sub"],
                         "verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
        except jwt.InvalidAudienceError:
            raise NotAuthenticatedError("token audience mismatch", code="token-audience") from None
        except jwt.PyJWTError:
            raise NotAuthenticatedError("invalid token", code="token-invalid") from None
        now = self._clock().timestamp()
        leeway = LEEWAY.total_seconds()
        try:
            exp, nbf, iat = float(claims["exp"]), float(claims["nbf"]), float(claims["iat"])
        except (TypeError, ValueError):
            raise NotAuthenticatedError("invalid token", code="token-invalid") from None
        if now >= exp + leeway:
            raise NotAuthenticatedError("token expired", code="token-expired")
        if now + leeway < nbf or now + leeway < iat:
            raise NotAuthenticatedError("token not yet valid", code="token-not-yet-valid")
        client_id = str(claims.get("client_id", ""))
        row = self._client(session, client_id)
        if row is None:
            raise NotAuthenticatedError("invalid client", code="invalid-client")
        scopes = frozenset(str(claims.get("scope", "")).split()) & split_set(row.scopes)
        return TokenIdentity("client", row.client_id, scopes, str(claims.get("jti", "")),
                             roles=split_set(row.roles),
                             expires_at=datetime.fromtimestamp(exp, tz=self._clock().tzinfo))

    def disable_client(self, session: Session, client_id: str) -> bool:
        """Disable a client; its outstanding JWTs stop verifying at once."""
        row = session.get(OAuthClient, client_id)
        if row is None:
            return False
        row.enabled = False
        return True

    # -- documents for the web layer -------------------------------------------------
    def introspection_response(self, session: Session, token: str) -> dict[str, Any]:
        """RFC 7662 2.2 introspection response (``{"active": false}`` for any bad token)."""
        try:
            if token.startswith(TOKEN_PREFIX):
                ident = self.verify_personal(session, token)
            else:
                ident = self.verify_jwt(session, token)
        except NotAuthenticatedError:
            return {"active": False}
        out: dict[str, Any] = {
            "active": True, "scope": " ".join(sorted(ident.scopes)), "token_type": "Bearer",
            "iss": self.issuer, "aud": self.audience,
            "sub": ident.subject if ident.kind == "personal" else f"client:{ident.subject}",
        }
        if ident.kind == "client":
            out["client_id"] = ident.subject
        if ident.expires_at is not None:
            out["exp"] = int(ident.expires_at.timestamp())
        return out


def authorization_server_metadata(issuer: str, base_url: str) -> dict[str, Any]:
    """RFC 8414 2 authorization-server metadata (IHE IUA ITI-103)."""
    base = base_url.rstrip("/")
    return {
        "issuer": issuer,
        "token_endpoint": f"{base}/oauth2/token",
        "introspection_endpoint": f"{base}/oauth2/introspect",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "bearer"],
        "response_types_supported": ["token"],
        "scopes_supported": sorted(ALL_PERMISSIONS),
        "access_token_signing_alg_values_supported": [JWT_ALGORITHM],
    }
