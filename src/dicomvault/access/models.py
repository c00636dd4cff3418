"""Identity and access tables (users, MFA, sessions, tokens, care teams, peers).

Secrets are never stored in clear: passwords are argon2id hashes, session ids,
API tokens, client secrets and recovery codes are HMAC-SHA-256 digests under
``keyring.token_key``/``session_key``, TOTP secrets are AES-256-GCM sealed under
a per-user DEK wrapped by the KEK.  Break-the-glass reasons are sealed too
(they may name a patient).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from dicomvault.index.base import Base, UtcDateTime, utcnow


def new_id() -> str:
    return uuid.uuid4().hex


def join_set(values: frozenset[str] | set[str] | tuple[str, ...] | list[str]) -> str:
    """Store a small set of identifiers as a sorted comma-separated string."""
    return ",".join(sorted({v for v in values if v}))


def split_set(text: str | None) -> frozenset[str]:
    return frozenset(v for v in (text or "").split(",") if v)


class User(Base):
    __tablename__ = "access_users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    roles: Mapped[str] = mapped_column(String(400), default="")
    password_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    mfa_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Invite link token (HMAC digest) and its expiry; null once used.
    invite_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    invite_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    #: OpenID Connect identity (issuer + subject) when the user signs in via SSO.
    oidc_issuer: Mapped[str | None] = mapped_column(String(300), nullable=True)
    oidc_subject: Mapped[str | None] = mapped_column(String(300), nullable=True)
    #: Keyed blind-index token of the DICOM Person Name used to match Referring
    #: Physician's Name (0008,0090) of studies (care-team by referral).
    referring_name_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: For the ``patient`` role: the patient key ids that are the user's own.
    patient_key_ids: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("oidc_issuer", "oidc_subject", name="uq_access_users_oidc"),)


class PasswordHistory(Base):
    __tablename__ = "access_password_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("access_users.id", ondelete="CASCADE"), index=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class MfaSecret(Base):
    __tablename__ = "access_mfa_secrets"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("access_users.id", ondelete="CASCADE"), primary_key=True
    )
    #: Per-user DEK wrapped by the KEK (``WrappedKey.to_str``).
    wrapped_key: Mapped[str] = mapped_column(String(300))
    #: TOTP secret sealed (AES-256-GCM, AAD = user id) under that DEK.
    sealed_secret: Mapped[bytes] = mapped_column(LargeBinary)
    confirmed: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Highest accepted RFC 6238 time step: a code at or below it is a replay.
    last_used_step: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class RecoveryCode(Base):
    __tablename__ = "access_recovery_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("access_users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class UserSession(Base):
    __tablename__ = "access_sessions"

    #: SHA-256 of the 256-bit session id; the id itself is never stored.
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("access_users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    mfa_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    door: Mapped[str] = mapped_column(String(16), default="ui")


class ApiToken(Base):
    __tablename__ = "access_api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("access_users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    scopes: Mapped[str] = mapped_column(String(400), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class OAuthClient(Base):
    __tablename__ = "access_oauth_clients"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    secret_hash: Mapped[str] = mapped_column(String(64))
    roles: Mapped[str] = mapped_column(String(400), default="")
    #: Scopes the client may request (subset of its roles' permissions).
    scopes: Mapped[str] = mapped_column(String(400), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class LoginThrottle(Base):
    """Failed-login counters per account (``user:<name>``) and per address (``addr:<ip>``)."""

    __tablename__ = "access_login_throttle"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class CareTeamAssignment(Base):
    __tablename__ = "access_care_team"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("access_users.id", ondelete="CASCADE"), index=True)
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    assigned_by: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("user_id", "study_uid", name="uq_access_care_team_pair"),)


class BreakGlassGrant(Base):
    __tablename__ = "access_break_glass"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("access_users.id", ondelete="CASCADE"), index=True)
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    wrapped_key: Mapped[str] = mapped_column(String(300))
    #: The stated reason, sealed (it may mention a patient).
    sealed_reason: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class DicomPeer(Base):
    """A DICOM AE managed through the admin API / CLI (adds to ``settings.peers``)."""

    __tablename__ = "access_dicom_peers"

    ae_title: Mapped[str] = mapped_column(String(16), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), default="")
    port: Mapped[int] = mapped_column(Integer, default=0)
    tls: Mapped[bool] = mapped_column(Boolean, default=True)
    services: Mapped[str] = mapped_column(String(100), default="echo,find,get,move,store")
    move_destinations: Mapped[str] = mapped_column(Text, default="")
    allowed_hosts: Mapped[str] = mapped_column(Text, default="")
    cert_sha256: Mapped[str] = mapped_column(String(64), default="")
    role: Mapped[str] = mapped_column(String(32), default="service")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
