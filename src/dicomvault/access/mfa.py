"""TOTP second factor (RFC 6238) with replay protection, and recovery codes.

* Secrets: 160 random bits (RFC 4226 4 R6), sealed with AES-256-GCM under a
  per-user DEK that the KEK wraps; never stored in clear.
* Verification accepts the current step +-1 (RFC 6238 5.2) and records the
  highest step accepted: a code whose step is not newer is refused, so each code
  works once (RFC 6238 5.2, "MUST NOT accept the second attempt").  The update
  is a compare-and-set, so two concurrent logins cannot both use one code.
* Enrolment returns the ``otpauth://`` URI and a QR code (SVG and PNG bytes).
* Ten one-time recovery codes, stored as HMAC-SHA-256 digests.
"""

from __future__ import annotations

import hmac
import io
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import pyotp
import segno
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from dicomvault.access.models import MfaSecret, RecoveryCode, User
from dicomvault.crypto.keyring import Keyring, WrappedKey
from dicomvault.errors import ConflictError, InvalidInputError

STEP_SECONDS = 30
DIGITS = 6
VALID_WINDOW = 1
RECOVERY_CODE_COUNT = 10
_AAD = "dicomvault/mfa-secret/"


@dataclass(frozen=True)
class Enrolment:
    """What a user needs to add the account to an authenticator app."""

    provisioning_uri: str
    qr_svg: bytes
    qr_png: bytes
    #: The base32 secret, for manual entry.  Shown once, never stored in clear.
    secret: str


def _normalise_recovery(code: str) -> str:
    return "".join(ch for ch in code.lower() if ch.isalnum())


class MfaService:
    """TOTP enrolment, verification and recovery codes over the access tables."""

    def __init__(self, keyring: Keyring, issuer: str, clock: Callable[[], datetime]) -> None:
        self.keyring = keyring
        self.issuer = issuer
        self._clock = clock

    # -- secrets -----------------------------------------------------------
    def _seal(self, user_id: str, secret: str) -> tuple[str, bytes]:
        dek, wrapped = self.keyring.new_data_key()
        return wrapped.to_str(), dek.seal(secret.encode(), (_AAD + user_id).encode())

    def _open(self, row: MfaSecret) -> str:
        dek = self.keyring.unwrap(WrappedKey.from_str(row.wrapped_key))
        return dek.open(row.sealed_secret, (_AAD + row.user_id).encode()).decode()

    def _recovery_hash(self, user_id: str, code: str) -> str:
        data = f"recovery|{user_id}|{_normalise_recovery(code)}".encode()
        return self.keyring.hmac(self.keyring.token_key, data).hex()

    # -- enrolment ---------------------------------------------------------
    def begin_enrolment(self, session: Session, user: User) -> Enrolment:
        """Create (or replace an unconfirmed) TOTP secret; RFC 6238 + Key URI format."""
        existing = session.get(MfaSecret, user.id)
        if existing is not None and existing.confirmed:
            raise ConflictError("MFA is already enrolled; reset it first", code="mfa-already-enrolled")
        secret = pyotp.random_base32(32)  # 160 bits
        wrapped, sealed = self._seal(user.id, secret)
        if existing is None:
            session.add(MfaSecret(user_id=user.id, wrapped_key=wrapped, sealed_secret=sealed))
        else:
            existing.wrapped_key, existing.sealed_secret, existing.last_used_step = wrapped, sealed, 0
        session.flush()
        uri = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
            name=user.username, issuer_name=self.issuer
        )
        qr = segno.make(uri, error="m")
        svg, png = io.BytesIO(), io.BytesIO()
        qr.save(svg, kind="svg", scale=4)
        qr.save(png, kind="png", scale=4)
        return Enrolment(uri, svg.getvalue(), png.getvalue(), secret)

    def confirm_enrolment(self, session: Session, user: User, code: str) -> list[str]:
        """Check the first code, switch MFA on, return fresh one-time recovery codes."""
        row = session.get(MfaSecret, user.id)
        if row is None:
            raise InvalidInputError("no MFA enrolment in progress", code="mfa-not-enrolling")
        if not self._verify_row(session, row, code):
            raise InvalidInputError("the code is not valid", code="mfa-invalid-code")
        row.confirmed = True
        user.mfa_enabled = True
        return self.new_recovery_codes(session, user)

    def new_recovery_codes(self, session: Session, user: User) -> list[str]:
        """Replace the user's recovery codes with ten fresh ones (shown once)."""
        session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
        codes = []
        for _ in range(RECOVERY_CODE_COUNT):
            raw = secrets.token_hex(6)  # 48 bits each
            code = f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"
            codes.append(code)
            session.add(RecoveryCode(user_id=user.id, code_hash=self._recovery_hash(user.id, code)))
        session.flush()
        return codes

    def reset(self, session: Session, user: User) -> None:
        """Remove the secret and recovery codes (the user must enrol again)."""
        session.execute(delete(MfaSecret).where(MfaSecret.user_id == user.id))
        session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
        user.mfa_enabled = False

    # -- verification --------------------------------------------------------
    def _matching_step(self, secret: str, code: str) -> int | None:
        code = code.strip().replace(" ", "")
        if len(code) != DIGITS or not code.isdigit():
            return None
        totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
        now_step = int(self._clock().timestamp()) // STEP_SECONDS
        found = None
        for step in range(now_step - VALID_WINDOW, now_step + VALID_WINDOW + 1):
            # Compare every candidate (no early exit) in constant time.
            if hmac.compare_digest(totp.generate_otp(step), code):
                found = step
        return found

    def _verify_row(self, session: Session, row: MfaSecret, code: str) -> bool:
        step = self._matching_step(self._open(row), code)
        if step is None or step <= row.last_used_step:
            return False
        # Compare-and-set: only one caller can advance the step past this value.
        result = session.execute(
            update(MfaSecret)
            .where(MfaSecret.user_id == row.user_id, MfaSecret.last_used_step < step)
            .values(last_used_step=step)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False
        row.last_used_step = step
        return True

    def verify_totp(self, session: Session, user: User, code: str) -> bool:
        """RFC 6238 check with +-1 step and single use of each code."""
        row = session.get(MfaSecret, user.id)
        if row is None or not row.confirmed:
            return False
        return self._verify_row(session, row, code)

    def use_recovery_code(self, session: Session, user: User, code: str) -> bool:
        """Accept an unused recovery code once."""
        digest = self._recovery_hash(user.id, code)
        row = session.execute(
            select(RecoveryCode).where(
                RecoveryCode.user_id == user.id,
                RecoveryCode.code_hash == digest,
                RecoveryCode.used_at.is_(None),
            )
        ).scalar_one_or_none()
        if row is None:
            return False
        result = session.execute(
            update(RecoveryCode)
            .where(RecoveryCode.id == row.id, RecoveryCode.used_at.is_(None))
            .values(used_at=self._clock())
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1  # type: ignore[attr-defined]

    def verify(self, session: Session, user: User, code: str) -> bool:
        """A TOTP code, or (if it looks like one) a recovery code."""
        if len(_normalise_recovery(code)) == 12:
            return self.use_recovery_code(session, user, code)
        return self.verify_totp(session, user, code)

    def remaining_recovery_codes(self, session: Session, user: User) -> int:
        rows = session.execute(
            select(RecoveryCode.id).where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
        ).all()
        return len(rows)
