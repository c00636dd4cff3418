"""Progressive delay and temporary lockout after failed logins (NIST SP 800-63B 5.2.2).

Counters are kept per account and per network address.  After the first
failure each further attempt must wait ``2**(n-2)`` seconds (capped at 30 s);
at ``security.login_lockout_threshold`` failures the account is locked for
``security.login_lockout_minutes`` (an address gets four times the threshold,
since many users may share one).  Counters are keyed by a SHA-256 of the
username/address, so the table holds no usernames or IPs in clear, and unknown
usernames are throttled exactly like real ones (no account enumeration).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dicomvault.access.models import LoginThrottle
from dicomvault.config import SecuritySettings
from dicomvault.errors import NotAuthenticatedError

MAX_DELAY_SECONDS = 30
ADDRESS_FACTOR = 4


class LoginThrottledError(NotAuthenticatedError):
    """Too many failed logins; wait ``retry_after`` seconds and retry."""

    code = "login-throttled"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class FailureOutcome:
    """What one more failure did: which counters are now locked."""

    account_locked: bool
    address_locked: bool
    failures: int


def _key(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}:{value.lower()}".encode()).hexdigest()


def delay_seconds(failures: int) -> int:
    """Wait required before the next attempt after ``failures`` consecutive failures."""
    if failures <= 1:
        return 0
    return int(min(2 ** (failures - 2), MAX_DELAY_SECONDS))


class LoginThrottler:
    """Per-account and per-address failure counters over ``access_login_throttle``."""

    def __init__(self, security: SecuritySettings, clock: Callable[[], datetime]) -> None:
        self.security = security
        self._clock = clock

    def _keys(self, username: str, address: str | None) -> list[tuple[str, int]]:
        keys = [(_key("user", username), self.security.login_lockout_threshold)]
        if address:
            keys.append((_key("addr", address), self.security.login_lockout_threshold * ADDRESS_FACTOR))
        return keys

    def _row(self, session: Session, key: str) -> LoginThrottle | None:
        return session.execute(
            select(LoginThrottle).where(LoginThrottle.key == key).with_for_update()
        ).scalar_one_or_none()

    def _row_or_create(self, session: Session, key: str) -> LoginThrottle:
        """The locked counter row, inserting it if absent (safe against a concurrent insert)."""
        row = self._row(session, key)
        if row is None:
            try:
                with session.begin_nested():
                    session.add(LoginThrottle(key=key, failures=0))
            except IntegrityError:
                pass  # another login inserted it first; lock and use theirs
            row = self._row(session, key)
        assert row is not None
        return row

    def _fresh(self, row: LoginThrottle, now: datetime) -> None:
        """Forget failures older than the lockout window."""
        window = timedelta(minutes=self.security.login_lockout_minutes)
        if row.last_failure_at is not None and now - row.last_failure_at > window:
            row.failures = 0
        if row.locked_until is not None and row.locked_until <= now:
            row.locked_until = None
            row.failures = 0

    def check(self, session: Session, username: str, address: str | None) -> None:
        """Raise ``LoginThrottledError`` if an attempt is not allowed yet."""
        now = self._clock()
        wait = 0
        for key, _threshold in self._keys(username, address):
            row = self._row(session, key)
            if row is None:
                continue
            self._fresh(row, now)
            if row.locked_until is not None and row.locked_until > now:
                wait = max(wait, int((row.locked_until - now).total_seconds()) + 1)
            elif row.last_failure_at is not None:
                ready = row.last_failure_at + timedelta(seconds=delay_seconds(row.failures))
                if ready > now:
                    wait = max(wait, int((ready - now).total_seconds()) + 1)
        if wait:
            raise LoginThrottledError(wait)

    def record_failure(self, session: Session, username: str, address: str | None) -> FailureOutcome:
        """Count one failed attempt; lock at the threshold."""
        now = self._clock()
        locked = [False, False]
        user_failures = 0
        for i, (key, threshold) in enumerate(self._keys(username, address)):
            row = self._row_or_create(session, key)
            self._fresh(row, now)
            row.failures = (row.failures or 0) + 1
            row.last_failure_at = now
            if row.failures >= threshold and row.locked_until is None:
                row.locked_until = now + timedelta(minutes=self.security.login_lockout_minutes)
                locked[i] = True
            if i == 0:
                user_failures = row.failures
        session.flush()
        return FailureOutcome(locked[0], locked[1], user_failures)

    def record_success(self, session: Session, username: str) -> None:
        """A successful login clears the account counter (the address one decays)."""
        row = self._row(session, _key("user", username))
        if row is not None:
            row.failures = 0
            row.locked_until = None
            row.last_failure_at = None
