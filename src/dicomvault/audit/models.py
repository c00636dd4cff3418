"""Audit tables: the hash-chained records, their search keys, checkpoints,
the syslog outbox and alert state.

``audit_record.body`` holds the canonical JSON of one record (PHI fields as
AES-GCM ciphertext) and is exactly what the chain HMAC covers; the other
columns are copies of body fields kept for search and alert rules, and
``audit verify`` checks that they still agree with the body.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dicomvault.index.base import Base, UtcDateTime


class AuditRecord(Base):
    """One chained audit record (PS3.15 A.5.1 AuditMessage, stored encrypted)."""

    __tablename__ = "audit_record"
    #: Per-principal look-ups (search, the bulk-retrieval rule's window sum) read only
    #: that principal's records of the actions and codes asked for, in the time range asked for.
    __table_args__ = (
        Index("ix_audit_record_user_kind_time", "user_id", "action", "event_code", "event_time"),
    )

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    event_time: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)
    event_code: Mapped[str] = mapped_column(String(16), index=True)
    action: Mapped[str] = mapped_column(String(1))
    outcome: Mapped[int] = mapped_column(Integer)
    #: The requesting participant's user id (a principal id, never patient data).
    user_id: Mapped[str | None] = mapped_column(String(256))
    #: The requesting participant's network address.
    address: Mapped[str | None] = mapped_column(String(128), index=True)
    door: Mapped[str] = mapped_column(String(16))
    #: Number of instances moved/read (bulk-retrieval rule).
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    body: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class AuditSubject(Base):
    """Search keys of a record: patient key ids, study UIDs, user objects."""

    __tablename__ = "audit_subject"
    __table_args__ = (Index("ix_audit_subject_kind_value", "kind", "value"),)

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # patient, study, user
    value: Mapped[str] = mapped_column(String(128), primary_key=True)


class AuditCheckpoint(Base):
    """A signed statement "the chain head at ``seq`` was ``head_hash``" (Ed25519)."""

    __tablename__ = "audit_checkpoint"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    head_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    node_id: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    signature: Mapped[bytes] = mapped_column(LargeBinary(64))


class SyslogOutbox(Base):
    """Records still to forward to the syslog collector (RFC 5424/5425).

    Holds only the record's ``seq``: the message is rendered at send time, so
    no PHI sits here in clear.
    """

    __tablename__ = "audit_syslog_outbox"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    enqueued_at: Mapped[datetime] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    last_error: Mapped[str | None] = mapped_column(String(200))


class AlertState(Base):
    """When a rule last fired for one key (an HMAC of address/account/principal)."""

    __tablename__ = "audit_alert_state"

    rule: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_alert_at: Mapped[datetime] = mapped_column(UtcDateTime)
    alert_count: Mapped[int] = mapped_column(Integer, default=0)


class AuditRateBucket(Base):
    """Instances moved by one principal per ``bucket`` (``RATE_BUCKET_SECONDS`` wide).

    Derived from the chain (outside it) and kept in the append transaction, so the
    bulk-retrieval rule bounds a principal's window total by summing a few dozen
    buckets instead of every retrieve record in the window.
    """

    __tablename__ = "audit_rate_bucket"

    rule: Mapped[str] = mapped_column(String(32), primary_key=True)
    #: The principal's user id, as in ``audit_record.user_id`` (never patient data).
    subject: Mapped[str] = mapped_column(String(256), primary_key=True)
    #: Start of the bucket in seconds since the epoch, divided by the bucket width.
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    total: Mapped[int] = mapped_column(BigInteger, default=0)
