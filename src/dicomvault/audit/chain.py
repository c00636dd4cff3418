"""The append-only, hash-chained audit trail (DESIGN.md invariant 3).

``hash = HMAC-SHA-256(audit_key, prev_hash || canonical(body))``; the first
record chains to 32 zero bytes.  Appends are serialised on the chain head:
SQLite transactions start with ``BEGIN IMMEDIATE`` (``index.db``), and on
PostgreSQL the writer takes ``pg_advisory_xact_lock(AUDIT_LOCK_KEY)`` before
reading the head, so concurrent threads and processes never fork the chain.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from sqlalchemy import Table, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from dicomvault.audit.events import (
    AuditEvent,
    EventType,
    Outcome,
    RoleId,
    requestor_participant,
    security_alert,
    security_resource_object,
)
from dicomvault.audit.models import AuditRecord, AuditSubject, SyslogOutbox
from dicomvault.audit.record import (
    StoredRecord,
    canonical,
    decode,
    derive,
    seal_event,
)
from dicomvault.crypto.keyring import DataKey, Keyring
from dicomvault.errors import DicomVaultError, UnavailableError
from dicomvault.index.base import utcnow
from dicomvault.index.db import unit_of_work
from dicomvault.index.group_commit import GroupCommitter
from dicomvault.index.prepared import Prepared

if TYPE_CHECKING:
    from dicomvault.audit.checkpoint import Checkpoint
    from dicomvault.audit.metrics import Metrics
    from dicomvault.audit.verify import VerifyReport

GENESIS = bytes(32)
#: Advisory lock id for the chain head on PostgreSQL ("DVAUDIT" as an int64).
AUDIT_LOCK_KEY = 0x4456_4155_4449_54
#: Longest an ``append_soon`` record waits for a transaction to join (seconds).
DEFERRED_DELAY = 0.05


@dataclass(frozen=True)
class Appended:
    """A record just written in the current transaction (input to alert rules)."""

    seq: int
    event: AuditEvent
    body: dict[str, Any]


class AppendObserver(Protocol):
    """Alert rules: see each append inside the transaction, may add Security Alerts."""

    def on_append(self, session: Session, records: Sequence[Appended]) -> list[AuditEvent]: ...


class AlertSink(Protocol):
    """Notified (after the fact) when verification fails."""

    def chain_failure(self, report: VerifyReport) -> None: ...


_RECORDS = cast(Table, AuditRecord.__table__)
_SUBJECTS = cast(Table, AuditSubject.__table__)
_OUTBOX = cast(Table, SyslogOutbox.__table__)
# Built once and run on the driver cursor (``index.prepared``): every request of
# every door appends.
_INSERTS = (Prepared(insert(_RECORDS)), Prepared(insert(_SUBJECTS)), Prepared(insert(_OUTBOX)))
_SELECT_HEAD = Prepared(select(_RECORDS.c.seq, _RECORDS.c.hash).order_by(_RECORDS.c.seq.desc()).limit(1))


@dataclass
class _Rows:
    """Rows of one append round, inserted together."""

    records: list[dict[str, Any]] = field(default_factory=list)
    subjects: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)


def lock_head(session: Session) -> None:
    """Serialise writers on the chain head (PostgreSQL advisory lock; SQLite already is)."""
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK_KEY})


def read_head(session: Session) -> tuple[int, bytes]:
    row = _SELECT_HEAD.first(session.connection())
    return (0, GENESIS) if row is None else (int(row[0]), bytes(row[1]))


class AuditTrail:
    """Append, read and verify the audit chain."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        keyring: Keyring,
        dek_lookup: Callable[[str], DataKey | None],
        *,
        node_id: str = "dicomvault",
        syslog_outbox: bool = False,
        metrics: Metrics | None = None,
        checkpoint_export_dir: str | None = None,
    ) -> None:
        self._factory = session_factory
        self._keyring = keyring
        self._dek_lookup = dek_lookup
        self.node_id = node_id
        self.syslog_outbox = syslog_outbox
        self.metrics = metrics
        #: Write-once folder that receives signed checkpoints (``audit.checkpoint``).
        self.checkpoint_export_dir = checkpoint_export_dir
        # Concurrent appends without a session share one transaction; a failure fails
        # them all (no savepoints: the chain is one sequence).
        self._committer = GroupCommitter(session_factory, max_batch=256, isolate=False)
        self._observers: list[AppendObserver] = []
        self._alert_sinks: list[AlertSink] = []

    @property
    def session_factory(self) -> sessionmaker[Session]:
        return self._factory

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    def add_observer(self, observer: AppendObserver) -> None:
        """Register alert rules run inside every append transaction."""
        self._observers.append(observer)

    def add_alert_sink(self, sink: AlertSink) -> None:
        self._alert_sinks.append(sink)

    # -- writing -----------------------------------------------------------

    def append(self, events: Sequence[AuditEvent], session: Session | None = None) -> list[int]:
        """Append in the caller's transaction when ``session`` is given (flush, no commit:
        the record commits or rolls back with the data), else in its own transaction.
        Raises ``UnavailableError`` on failure (the caller fails the request).

        Without a session, concurrent callers are group-committed: one thread
        writes everything queued in one transaction and every caller returns
        only once its records are committed (or raises if that commit failed).
        """
        if not events:
            return []
        start = time.perf_counter()
        # Encrypt before taking the lock: sealing does not depend on the head,
        # and a sealing error (no patient key) fails only this caller.
        pending = [(e, seal_event(e, self._dek_lookup, self.node_id)) for e in events]
        try:
            if session is None:
                seqs = self._group_commit(pending)
            else:
                seqs = self._append_sealed(session, pending)
        except DicomVaultError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to audit fails the request
            raise UnavailableError("audit trail unavailable; the request was not completed") from exc
        if self.metrics is not None:
            self.metrics.audit_appended(events, time.perf_counter() - start)
        return seqs

    def append_soon(self, events: Sequence[AuditEvent], delay: float = DEFERRED_DELAY) -> None:
        """Append without waiting for the commit: the records join the next append's
        transaction, or commit within ``delay`` seconds, whichever comes first.

        Only for a record whose subject was already recorded durably (the closing
        "Instances Transferred" of a retrieve whose "Begin Transferring" was
        committed before any data left): a crash within ``delay`` can lose it.
        Reading the trail through this class (``head``, ``get``, ``verify``, the
        audit search) commits such records first.
        """
        if not events:
            return
        start = time.perf_counter()
        pending = [(e, seal_event(e, self._dek_lookup, self.node_id)) for e in events]
        self._committer.defer(lambda session: self._append_sealed(session, pending), delay)
        if self.metrics is not None:
            self.metrics.audit_appended(events, time.perf_counter() - start)

    def flush(self) -> None:
        """Commit the records ``append_soon`` queued (at shutdown, before reading the trail)."""
        try:
            self._committer.flush()
        except DicomVaultError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise UnavailableError("audit trail unavailable") from exc

    def _group_commit(self, pending: list[tuple[AuditEvent, dict[str, Any]]]) -> list[int]:
        try:
            return self._committer.run(lambda session: self._append_sealed(session, pending))
        except DicomVaultError as err:
            # The same error reaches every caller of a failed batch: each raises its own copy.
            raise type(err)(err.detail, code=err.code) from err

    def _append_sealed(
        self, session: Session, pending: list[tuple[AuditEvent, dict[str, Any]]]
    ) -> list[int]:
        """Chain sealed bodies under the head lock; run alert rules; return their seqs."""
        lock_head(session)
        seq, prev = read_head(session)
        written: list[int] = []
        queue = pending
        depth = 0
        conn = session.connection()
        while queue:
            appended: list[Appended] = []
            rows = _Rows()
            for event, body in queue:
                seq += 1
                prev = self._record(rows, seq, prev, body)
                appended.append(Appended(seq, event, body))
                if depth == 0:
                    written.append(seq)
            # On the session's connection: the same transaction, without the ORM
            # unit of work (this runs for every request).
            for statement, values in zip(_INSERTS, (rows.records, rows.subjects, rows.outbox),
                                              strict=True):
                statement.executemany(conn, values)
            depth += 1
            alerts: list[AuditEvent] = []
            if depth <= 2:  # alerts about alerts stop here
                for observer in self._observers:
                    alerts.extend(observer.on_append(session, appended))
            queue = [(e, seal_event(e, self._dek_lookup, self.node_id)) for e in alerts]
        return written

    def _record(self, rows: _Rows, seq: int, prev: bytes, body: dict[str, Any]) -> bytes:
        """Chain one sealed body after ``prev``: its rows go into ``rows``; returns its hash."""
        body = dict(body, seq=seq, recorded=utcnow().strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        text_body = canonical(body)
        digest = self._keyring.hmac(self._keyring.audit_key, prev + text_body.encode("utf-8"))
        d = derive(body)
        rows.records.append(dict(
            seq=seq, event_time=d.event_time, recorded_at=d.recorded_at, event_code=d.event_code,
            action=d.action, outcome=d.outcome, user_id=d.user_id, address=d.address, door=d.door,
            instance_count=d.instance_count, body=text_body, prev_hash=prev, hash=digest,
        ))
        rows.subjects.extend(dict(seq=seq, kind=kind, value=value) for kind, value in sorted(d.subjects))
        if self.syslog_outbox:
            now = utcnow()
            rows.outbox.append(dict(seq=seq, enqueued_at=now, attempts=0, next_attempt_at=now,
                                    last_error=None))
        return digest

    # -- reading -----------------------------------------------------------

    def hash_of(self, body_text: str, prev: bytes) -> bytes:
        """Recompute one link (used by ``verify``)."""
        return self._keyring.hmac(self._keyring.audit_key, prev + body_text.encode("utf-8"))

    def decode(self, record: AuditRecord) -> StoredRecord:
        """A stored record with its PHI decrypted ("[erased]" once the DEK is shredded)."""
        return decode(record.seq, record.body, self._dek_lookup)

    def get(self, seq: int) -> StoredRecord | None:
        self.flush()
        with unit_of_work(self._factory) as session:
            row = session.get(AuditRecord, seq)
            return None if row is None else self.decode(row)

    def head(self) -> tuple[int, bytes]:
        self.flush()
        with unit_of_work(self._factory) as session:
            return read_head(session)

    # -- checkpoints and verification ---------------------------------------------

    def checkpoint(self) -> Checkpoint | None:
        """Sign the current head now (Ed25519) and export it; called at shutdown too."""
        from dicomvault.audit.checkpoint import CheckpointService

        self.flush()
        return CheckpointService(self._factory, self._keyring, node_id=self.node_id,
                                 export_dir=self.checkpoint_export_dir).emit()

    def verify(self, export_dir: str | None = None, *, raise_alert: bool = True) -> VerifyReport:
        """Prove the chain unbroken (and not truncated before the latest checkpoint).

        On failure a Security Alert is appended and the alert sinks notified."""
        from dicomvault.audit.verify import verify_chain

        self.flush()
        report = verify_chain(self._factory, self._keyring,
                              export_dir=export_dir or self.checkpoint_export_dir)
        if not report.ok and raise_alert:
            alert = security_alert(
                EventType.AUDIT_CHAIN_FAILURE,
                [requestor_participant(self.node_id, role=RoleId.APPLICATION)],
                description=f"audit chain verification failed at record {report.first_bad_seq}: "
                f"{report.reason}",
                outcome=Outcome.SERIOUS_FAILURE,
                objects=[security_resource_object("audit-chain")],
                context={"first_bad_seq": report.first_bad_seq, "rule": "chain_integrity"},
            )
            self.append([alert])
            for sink in self._alert_sinks:
                sink.chain_failure(report)
        return report
