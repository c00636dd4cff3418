"""Server-side sessions (HIPAA 164.312(a)(2)(iii) automatic logoff; OWASP ASVS V3).

* The session id is 256 random bits; the database keeps only its SHA-256.
* The cookie value is ``<id>.<mac>`` (base64url), the MAC being HMAC-SHA-256
  under ``keyring.session_key``: a forged or altered cookie is refused before
  any database lookup.
* Idle timeout (``security.session_idle_minutes``) and absolute timeout
  (``security.session_absolute_hours``) are enforced on every validation; a
  timed-out session is revoked.
* CSRF token per session: HMAC of the id under the session key (synchroniser
  token; the web layer requires it on state-changing requests).
* The cookie is ``__Host-`` prefixed, HttpOnly, Secure, SameSite=Strict, Path=/.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dicomvault.access.models import UserSession
from dicomvault.config import SecuritySettings
from dicomvault.crypto.keyring import Keyring
from dicomvault.errors import ForbiddenError, NotAuthenticatedError

COOKIE_NAME = "__Host-dicomvault_session"
CSRF_HEADER = "X-CSRF-Token"
#: Attributes the web layer sets on the session cookie.
COOKIE_ATTRIBUTES = {"httponly": True, "secure": True, "samesite": "strict", "path": "/"}
#: Writes of ``last_seen_at`` are skipped when the previous one is this recent.
TOUCH_GRANULARITY = timedelta(seconds=10)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class IssuedSession:
    """A new session: the cookie value and CSRF token go to the client once."""

    cookie: str
    csrf_token: str
    user_id: str
    expires_at: datetime
    id_hash: str


@dataclass(frozen=True)
class SessionInfo:
    id_hash: str
    user_id: str
    mfa_verified: bool
    created_at: datetime
    expires_at: datetime
    address: str | None


class SessionManager:
    """Create, validate, touch and revoke sessions."""

    def __init__(
        self, keyring: Keyring, security: SecuritySettings, clock: Callable[[], datetime]
    ) -> None:
        self._key = keyring.session_key
        self._keyring = keyring
        self.security = security
        self._clock = clock

    @property
    def idle(self) -> timedelta:
        return timedelta(minutes=self.security.session_idle_minutes)

    @property
    def absolute(self) -> timedelta:
        return timedelta(hours=self.security.session_absolute_hours)

    # -- cookie format ---------------------------------------------------------
    def _mac(self, label: bytes, sid: bytes) -> bytes:
        return self._keyring.hmac(self._key, label + b"|" + sid)

    def _cookie(self, sid: bytes) -> str:
        return f"{_b64(sid)}.{_b64(self._mac(b'cookie', sid))}"

    def parse_cookie(self, cookie: str) -> bytes:
        """Return the session id if the cookie's MAC is valid; no database access."""
        try:
            sid_text, mac_text = cookie.split(".", 1)
            sid, mac = _unb64(sid_text), _unb64(mac_text)
        except (ValueError, binascii.Error):
            raise NotAuthenticatedError("invalid session", code="session-invalid") from None
        if len(sid) != 32 or not hmac.compare_digest(mac, self._mac(b"cookie", sid)):
            raise NotAuthenticatedError("invalid session", code="session-invalid")
        return sid

    @staticmethod
    def _hash(sid: bytes) -> str:
        return hashlib.sha256(sid).hexdigest()

    def csrf_token_for(self, cookie: str) -> str:
        """The CSRF token bound to this session (same value for the session's life)."""
        return _b64(self._mac(b"csrf", self.parse_cookie(cookie)))

    def check_csrf(self, cookie: str, token: str | None) -> None:
        """Refuse a state-changing request whose CSRF token is missing or wrong."""
        if not token or not hmac.compare_digest(token, self.csrf_token_for(cookie)):
            raise ForbiddenError("missing or invalid CSRF token", code="csrf")

    # -- lifecycle ------------------------------------------------------------------
    def create(
        self, session: Session, user_id: str, *, mfa_verified: bool, address: str | None,
        door: str = "ui",
    ) -> IssuedSession:
        """Start a session (call only after every required factor is verified)."""
        now = self._clock()
        sid = secrets.token_bytes(32)
        row = UserSession(
            id_hash=self._hash(sid), user_id=user_id, created_at=now, last_seen_at=now,
            expires_at=now + self.absolute, mfa_verified=mfa_verified, address=address, door=door,
        )
        session.add(row)
        session.flush()
        cookie = self._cookie(sid)
        return IssuedSession(cookie, self.csrf_token_for(cookie), user_id, row.expires_at, row.id_hash)

    def validate(self, session: Session, cookie: str) -> SessionInfo:
        """Check MAC, revocation, idle and absolute timeouts; touch ``last_seen_at``."""
        sid = self.parse_cookie(cookie)
        row = session.get(UserSession, self._hash(sid))
        if row is None or row.revoked_at is not None:
            raise NotAuthenticatedError("session ended", code="session-invalid")
        now = self._clock()
        if now >= row.expires_at:
            row.revoked_at = now
            raise NotAuthenticatedError("session expired", code="session-expired")
        if now - row.last_seen_at >= self.idle:
            row.revoked_at = now
            raise NotAuthenticatedError("session timed out (idle)", code="session-idle")
        if now - row.last_seen_at >= TOUCH_GRANULARITY:
            row.last_seen_at = now
        return SessionInfo(row.id_hash, row.user_id, row.mfa_verified, row.created_at,
                           row.expires_at, row.address)

    def peek(self, session: Session, cookie: str) -> SessionInfo | None:
        """Read-only validation for the common case: valid and recently touched.

        Returns ``None`` when the session needs a write (touch, timeout, revocation);
        the caller then uses ``validate`` in a write transaction.  A cookie with a
        bad MAC raises at once, without touching the database.
        """
        sid = self.parse_cookie(cookie)
        row = session.get(UserSession, self._hash(sid))
        now = self._clock()
        if (row is None or row.revoked_at is not None or now >= row.expires_at
                or now - row.last_seen_at >= min(TOUCH_GRANULARITY, self.idle)):
            return None
        return SessionInfo(row.id_hash, row.user_id, row.mfa_verified, row.created_at,
                           row.expires_at, row.address)

    def revoke(self, session: Session, cookie: str) -> str | None:
        """Log out this session; returns its user id (None if unknown)."""
        sid = self.parse_cookie(cookie)
        row = session.get(UserSession, self._hash(sid))
        if row is None:
            return None
        if row.revoked_at is None:
            row.revoked_at = self._clock()
        return row.user_id

    def revoke_all(self, session: Session, user_id: str) -> int:
        """"Log out everywhere": revoke every live session of ``user_id``."""
        result = session.execute(
            update(UserSession)
            .where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
            .values(revoked_at=self._clock())
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def active_count(self, session: Session, user_id: str) -> int:
        now = self._clock()
        rows = session.execute(
            select(UserSession.id_hash).where(
                UserSession.user_id == user_id, UserSession.revoked_at.is_(None),
                UserSession.expires_at > now,
            )
        ).all()
        return len(rows)
