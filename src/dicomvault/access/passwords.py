"""Password hashing (argon2id, RFC 9106) and the password policy.

Policy (NIST SP 800-63B 5.1.1.2): at least ``security.password_min_length``
characters, not one of the most common passwords (the shipped list
``access/data/common-passwords.txt``), not the username, and not one of the
last ``security.password_history`` passwords.  No composition rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from importlib import resources

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from dicomvault.config import SecuritySettings
from dicomvault.errors import InvalidInputError

#: Longest password accepted (argon2 handles any length; this bounds the work per request).
MAX_PASSWORD_LENGTH = 256


@cache
def common_passwords() -> frozenset[str]:
    """The shipped list of most common passwords, lower-cased."""
    text = resources.files("dicomvault.access").joinpath("data/common-passwords.txt").read_text(
        encoding="utf-8"
    )
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


class Passwords:
    """argon2id hashing plus policy checks.  ``hasher`` may be injected (cost profile)."""

    def __init__(self, security: SecuritySettings, hasher: PasswordHasher | None = None) -> None:
        self.security = security
        # argon2-cffi's defaults are the RFC 9106 "low memory" profile of argon2id.
        self.hasher = hasher or PasswordHasher()
        # A real hash to verify against for unknown users, so timing does not reveal them.
        self._dummy = self.hasher.hash("dicomvault-dummy-password")

    def hash(self, password: str) -> str:
        """argon2id hash in PHC string format (RFC 9106)."""
        return self.hasher.hash(password)

    def verify(self, stored_hash: str | None, password: str) -> bool:
        """Constant-work verification; an absent hash still costs one argon2 run."""
        if len(password) > MAX_PASSWORD_LENGTH:
            return False
        try:
            return self.hasher.verify(stored_hash or self._dummy, password) and stored_hash is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        return self.hasher.check_needs_rehash(stored_hash)

    def check_policy(self, password: str, username: str, previous_hashes: Iterable[str] = ()) -> None:
        """Refuse a new password that breaks the policy (NIST SP 800-63B 5.1.1.2).

        Raises ``InvalidInputError`` with codes ``password-too-short``,
        ``password-too-long``, ``password-common``, ``password-is-username``
        or ``password-reused``.  Never echoes the password.
        """
        minimum = self.security.password_min_length
        if len(password) < minimum:
            raise InvalidInputError(
                f"the password must have at least {minimum} characters", code="password-too-short"
            )
        if len(password) > MAX_PASSWORD_LENGTH:
            raise InvalidInputError(
                f"the password must have at most {MAX_PASSWORD_LENGTH} characters",
                code="password-too-long",
            )
        lowered = password.lower()
        if lowered in common_passwords() or lowered.strip() in common_passwords():
            raise InvalidInputError("this password is too common", code="password-common")
        if username and len(lowered.replace(username.lower(), "")) < 8:
            raise InvalidInputError("the password must not be the username", code="password-is-username")
        for old in list(previous_hashes)[: self.security.password_history]:
            if self.verify(old, password):
                raise InvalidInputError(
                    f"the password was used recently (last {self.security.password_history})",
                    code="password-reused",
                )
