"""Security alert rules (issue 4 §5): raise Security Alert records and notify.

The engine is an ``AppendObserver`` of the audit trail: it sees each record
inside the append transaction (after the chain lock, so rules never race
across threads or processes), counts over the chain's own columns, and
returns new Security Alert events (PS3.15 A.5.3.11) that are chained in the
same transaction.  Each windowed rule fires at most once per window per key
(``audit_alert_state``).  Notification goes out after commit: by webhook
(JSON, no PHI) and by syslog (the alert is an audit record, so the syslog
outbox carries it).

Rules and their settings (``[audit]``):

=====================  =========================================================
brute_force_address    >= failed_login_threshold failed User Authentications from
                       one address within failed_login_window_seconds
brute_force_account    the same, against one account
bulk_retrieval         > bulk_retrieve_threshold instances transferred/exported by
                       one principal within bulk_retrieve_window_seconds
break_glass            an access granted by break-the-glass (every use)
outside_hours          PHI access outside working_hours (local time), once an hour
                       per principal
chain_integrity        audit verification failed (``AuditTrail.verify``)
object_integrity       a Security Alert "Stored Object Integrity Failure"
tls_handshake          a failed TLS handshake from a configured peer's address,
                       once per failed_login_window_seconds per address
=====================  =========================================================
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from sqlalchemy import Integer, bindparam, func, literal, or_, select, text
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from dicomvault.audit.chain import Appended
from dicomvault.audit.events import (
    ActiveParticipant,
    AuditEvent,
    EventType,
    Outcome,
    RoleId,
    requestor_participant,
    security_alert,
    security_resource_object,
    user_object,
)
from dicomvault.audit.models import AlertState, AuditRecord, AuditSubject
from dicomvault.audit.record import instance_count, parse_time
from dicomvault.config import AuditSettings, PeerSettings
from dicomvault.crypto.keyring import Keyring
from dicomvault.index.prepared import Prepared

if TYPE_CHECKING:
    from dicomvault.audit.metrics import Metrics
    from dicomvault.audit.verify import VerifyReport

log = logging.getLogger(__name__)

SECURITY_ALERT = "110113"
USER_AUTHENTICATION = "110114"
#: Retrieval-like records counted by the bulk rule: (event code, action).
_BULK = (("110104", "R"), ("110106", "R"), ("110106", "E"))
# Built once (this rule runs on every retrieve). User, action and code narrow the
# (user, action, code, time) index to this rule's records in the window (stores share
# code 110104 with retrieves: the action tells them apart).
_BULK_TOTAL = select(func.coalesce(func.sum(AuditRecord.instance_count), 0)).where(
    AuditRecord.user_id == bindparam("b_user"),
    # literal(): plain bound values; a list would be re-expanded into the SQL on every run.
    AuditRecord.action.in_([literal(a) for a in sorted({a for _, a in _BULK})]),
    AuditRecord.event_code.in_([literal(c) for c in sorted({c for c, _ in _BULK})]),
    AuditRecord.event_time > bindparam("b_since"),
    or_(*[(AuditRecord.event_code == c) & (AuditRecord.action == a) for c, a in _BULK]),
    AuditRecord.outcome == 0,
)
#: Width of the per-principal buckets the bulk rule counts instances in (seconds), and
#: the longest window it reads from them (a longer window sums the records themselves).
RATE_BUCKET_SECONDS = 10
RATE_HORIZON_SECONDS = 7 * 86400
_BULK_RULE = "bulk_retrieval"
#: Principals whose last pruned bucket is remembered (then forgotten all at once).
_PRUNED_MEMORY = 10_000
# Plain SQL that SQLite (3.24+) and PostgreSQL both accept as written.
# On the driver cursor (``Prepared``): they run on every retrieve's audit append.
_BUCKET_ADD = Prepared(text(
    "INSERT INTO audit_rate_bucket (rule, subject, bucket, total) VALUES (:rule, :subject, :bucket, :n) "
    "ON CONFLICT (rule, subject, bucket) DO UPDATE SET total = audit_rate_bucket.total + excluded.total"))
_BUCKET_PRUNE = Prepared(text(
    "DELETE FROM audit_rate_bucket WHERE rule = :rule AND subject = :subject AND bucket < :before"))
_BUCKET_SUM = Prepared(text(
    "SELECT coalesce(sum(total), 0) AS total FROM audit_rate_bucket "
    "WHERE rule = :rule AND subject = :subject AND bucket >= :since").columns(total=Integer))
#: Records that touch PHI for the outside-hours rule.
_PHI_ACCESS = {"110102", "110103", "110104", "110106", "110112"}
_NOTIFY_CAUSES = {
    EventType.EMERGENCY_OVERRIDE_STARTED.value.code: "break_glass",
    EventType.AUDIT_CHAIN_FAILURE.value.code: "chain_integrity",
    EventType.OBJECT_INTEGRITY_FAILURE.value.code: "object_integrity",
}
_SESSION_KEY = "dicomvault.audit.alert_notices"
_HOOKED = "dicomvault.audit.alert_hooked"


@dataclass(frozen=True)
class AlertNotice:
    """What a notifier receives: no PHI, only rule, record number and our own text."""

    rule: str
    seq: int | None
    description: str
    node: str
    time: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class Notifier(Protocol):
    def notify(self, notice: AlertNotice) -> None: ...


class WebhookNotifier:
    """POST each notice as JSON to a webhook from a worker thread (3 tries, back-off)."""

    def __init__(self, url: str, *, timeout: float = 5.0, attempts: int = 3,
                 backoff: float = 1.0) -> None:
        self.url = url
        self._timeout = timeout
        self._attempts = attempts
        self._backoff = backoff
        self._queue: queue.Queue[AlertNotice | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="audit-webhook", daemon=True)
        self._thread.start()
        self.delivered = 0
        self.failed = 0

    def notify(self, notice: AlertNotice) -> None:
        self._queue.put(notice)

    def _run(self) -> None:
        with httpx.Client(timeout=self._timeout) as client:
            while (notice := self._queue.get()) is not None:
                for attempt in range(self._attempts):
                    try:
                        resp = client.post(self.url, content=notice.to_json(),
                                           headers={"content-type": "application/json"})
                        if resp.status_code < 300:
                            self.delivered += 1
                            break
                    except httpx.HTTPError:
                        pass
                    threading.Event().wait(self._backoff * (2 ** attempt))
                else:
                    self.failed += 1
                    log.warning("alert webhook delivery failed for rule %s", notice.rule)
                self._queue.task_done()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until queued notices were attempted (tests, shutdown)."""
        done = threading.Event()

        def wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        done.wait(timeout)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)


def parse_working_hours(spec: str) -> tuple[int, int] | None:
    """"07-19" → (7, 19): access allowed from 07:00 to 18:59 local time; "" → None."""
    if not spec.strip():
        return None
    start, _, end = spec.partition("-")
    a, b = int(start), int(end)
    if not (0 <= a <= 23 and 1 <= b <= 24):
        raise ValueError("working_hours must look like 07-19")
    return a, b


def known_peer_addresses(peers: Iterable[PeerSettings]) -> frozenset[str]:
    out: set[str] = set()
    for peer in peers:
        if peer.host:
            out.add(peer.host)
        out.update(peer.allowed_hosts)
    return frozenset(out)


class AlertEngine:
    """The rules above, run inside each audit append."""

    def __init__(
        self,
        settings: AuditSettings,
        keyring: Keyring,
        *,
        node_id: str = "dicomvault",
        peers: Iterable[PeerSettings] = (),
        notifiers: Sequence[Notifier] = (),
        metrics: Metrics | None = None,
        local_tz: tzinfo | None = None,
    ) -> None:
        self.settings = settings
        self._keyring = keyring
        self.node_id = node_id
        self.known_peers = known_peer_addresses(peers)
        self.notifiers = list(notifiers)
        self.metrics = metrics
        self.working_hours = parse_working_hours(settings.working_hours)
        self._tz = local_tz
        #: Principal → the bucket its old buckets were last pruned for.
        self._pruned: dict[str, int] = {}

    # -- AppendObserver -----------------------------------------------------------

    def on_append(self, session: Session, records: Sequence[Appended]) -> list[AuditEvent]:
        """Evaluate every rule for the records just chained; return new Security Alerts."""
        alerts: list[AuditEvent] = []
        for rec in records:
            body = rec.body
            code, outcome = body["event"][0], body["outcome"]
            now = parse_time(body["time"])
            requestor = next((p for p in body["participants"] if p["is_requestor"]), None)
            user = requestor["user_id"] if requestor else None
            address = requestor["address"] if requestor else None
            cause = body["types"][0][0] if body["types"] else ""
            if code == SECURITY_ALERT:
                if body.get("context", {}).get("rule"):
                    self._count(body["context"]["rule"])
                    self._queue_notice(session, body["context"]["rule"], rec.seq,
                                       body["outcome_description"])
                elif cause in _NOTIFY_CAUSES and (
                    cause != EventType.EMERGENCY_OVERRIDE_STARTED.value.code or outcome == 0
                ):
                    self._count(_NOTIFY_CAUSES[cause])
                    self._queue_notice(session, _NOTIFY_CAUSES[cause], rec.seq,
                                       body["outcome_description"] or cause)
                if body.get("context", {}).get("tls_failure") and address in self.known_peers:
                    alerts += self._fire(session, "tls_handshake", address, now,
                                         self.settings.failed_login_window_seconds,
                                         EventType.TLS_HANDSHAKE_FAILURE, user, address,
                                         "TLS handshake failures from a configured peer")
                continue
            if code == USER_AUTHENTICATION and outcome != 0:
                alerts += self._brute_force(session, now, user, address)
            if body.get("context", {}).get("break_glass") and outcome == 0:
                alerts += self._fire(session, "break_glass", f"{rec.seq}", now, 0,
                                     EventType.EMERGENCY_OVERRIDE_STARTED, user, address,
                                     "access granted by break-the-glass")
            if user and (code, body["action"]) in _BULK:
                if outcome == 0:
                    self._add_to_bucket(session, now, user[:256], instance_count(body))
                alerts += self._bulk(session, now, user[:256], address)
            if user and self.working_hours and code in _PHI_ACCESS and outcome == 0:
                alerts += self._outside_hours(session, now, user, address)
        return alerts

    # -- rules -------------------------------------------------------------------

    def _brute_force(self, session: Session, now: datetime, user: str | None,
                     address: str | None) -> list[AuditEvent]:
        window = self.settings.failed_login_window_seconds
        since = now - timedelta(seconds=window)
        failed = (AuditRecord.event_code == USER_AUTHENTICATION) & (AuditRecord.outcome != 0) & (
            AuditRecord.event_time > since)
        out: list[AuditEvent] = []
        if address:
            n = session.scalar(select(func.count()).where(failed, AuditRecord.address == address))
            if (n or 0) >= self.settings.failed_login_threshold:
                out += self._fire(session, "brute_force_address", address, now, window,
                                  EventType.REPEATED_LOGIN_FAILURES, user, address,
                                  f"{n} failed logins from one address within {window}s")
        if user:
            by_user = or_(AuditRecord.user_id == user, AuditRecord.seq.in_(
                select(AuditSubject.seq).where(AuditSubject.kind == "user", AuditSubject.value == user)))
            n = session.scalar(select(func.count()).where(failed, by_user))
            if (n or 0) >= self.settings.failed_login_threshold:
                out += self._fire(session, "brute_force_account", user, now, window,
                                  EventType.REPEATED_LOGIN_FAILURES, user, address,
                                  f"{n} failed logins against one account within {window}s")
        return out

    def _add_to_bucket(self, session: Session, now: datetime, user: str, count: int) -> None:
        """Count a successful retrieve in its principal's bucket; drop that principal's
        buckets older than the horizon."""
        bucket = int(now.timestamp()) // RATE_BUCKET_SECONDS
        conn = session.connection()
        _BUCKET_ADD.execute(conn, {"rule": _BULK_RULE, "subject": user, "bucket": bucket, "n": count})
        if self._pruned.get(user) != bucket:
            # Once per bucket and principal is enough: the sum reads only the window's
            # buckets, so a prune lost with a rolled-back transaction costs only space.
            _BUCKET_PRUNE.execute(conn, {"rule": _BULK_RULE, "subject": user,
                                         "before": bucket - RATE_HORIZON_SECONDS // RATE_BUCKET_SECONDS})
            if len(self._pruned) >= _PRUNED_MEMORY:
                self._pruned.clear()
            self._pruned[user] = bucket

    def _bulk(self, session: Session, now: datetime, user: str,
              address: str | None) -> list[AuditEvent]:
        """Sum the principal's retrieves in the window, but only when the cheap bound (its
        buckets from the one holding the window's start) exceeds the threshold and the rule
        has not fired in this window already: both would make the exact sum moot."""
        window = self.settings.bulk_retrieve_window_seconds
        since = now - timedelta(seconds=window)
        threshold = self.settings.bulk_retrieve_threshold
        conn = session.connection()
        if window <= RATE_HORIZON_SECONDS:
            found = _BUCKET_SUM.first(conn, {"rule": _BULK_RULE, "subject": user,
                                             "since": int(since.timestamp()) // RATE_BUCKET_SECONDS})
            bound = (found.total if found is not None else 0) or 0
            if bound <= threshold or self._fired_within(session, _BULK_RULE, user, now, window):
                return []
        total = conn.execute(_BULK_TOTAL, {"b_user": user, "b_since": since}).scalar() or 0
        if total <= threshold:
            return []
        return self._fire(session, _BULK_RULE, user, now, window, EventType.BULK_RETRIEVAL,
                          user, address, f"{total} instances retrieved by one principal "
                          f"within {window}s (threshold {self.settings.bulk_retrieve_threshold})")

    def _outside_hours(self, session: Session, now: datetime, user: str,
                       address: str | None) -> list[AuditEvent]:
        assert self.working_hours is not None
        start, end = self.working_hours
        hour = now.astimezone(self._tz).hour
        if start <= hour < end:
            return []
        return self._fire(session, "outside_hours", user, now, 3600,
                          EventType.OUTSIDE_WORKING_HOURS, user, address,
                          f"PHI accessed at {hour:02d}h, outside working hours "
                          f"{start:02d}-{end:02d}")

    # -- firing ------------------------------------------------------------------

    def _fire(
        self, session: Session, rule: str, key: str, now: datetime, window_seconds: int,
        cause: EventType, user: str | None, address: str | None, description: str,
    ) -> list[AuditEvent]:
        """One Security Alert per rule, key and window (window 0: every time)."""
        key_hash, state = self._state(session, rule, key)
        if _within(state, now, window_seconds):
            return []
        if state is None:
            state = AlertState(rule=rule, key_hash=key_hash, last_alert_at=now, alert_count=0)
            session.add(state)
        state.last_alert_at = now
        state.alert_count += 1
        participants = [requestor_participant(self.node_id, role=RoleId.APPLICATION)]
        objects = [security_resource_object(f"rule:{rule}")]
        if user:
            participants.append(ActiveParticipant(
                user_id=user, is_requestor=False, role=RoleId.SOURCE, network_access_point=address))
            objects.append(user_object(user))
        return [security_alert(
            cause, participants, description=description, outcome=Outcome.MINOR_FAILURE,
            objects=objects, door="job", context={"rule": rule},
        )]

    def _state(self, session: Session, rule: str, key: str) -> tuple[str, AlertState | None]:
        key_hash = self._keyring.hmac(self._keyring.audit_key, f"alert|{rule}|{key}".encode()).hex()
        return key_hash, session.get(AlertState, (rule, key_hash))

    def _fired_within(self, session: Session, rule: str, key: str, now: datetime,
                      window_seconds: int) -> bool:
        return _within(self._state(session, rule, key)[1], now, window_seconds)

    def _count(self, rule: str) -> None:
        if self.metrics is not None:
            self.metrics.alert(rule)

    # -- notification ------------------------------------------------------------

    def _queue_notice(self, session: Session, rule: str, seq: int | None, description: str) -> None:
        """Hold a notice until the append transaction commits (dropped on rollback)."""
        if not self.notifiers:
            return
        if not session.info.get(_HOOKED):
            session.info[_HOOKED] = True
            sa_event.listen(session, "after_commit", self._after_commit)
            sa_event.listen(session, "after_rollback", _drop_notices)
        session.info.setdefault(_SESSION_KEY, []).append(AlertNotice(
            rule, seq, description, self.node_id, datetime.now().astimezone().isoformat()))

    def _after_commit(self, session: Session) -> None:
        for notice in session.info.pop(_SESSION_KEY, None) or []:
            self._send(notice)

    def _send(self, notice: AlertNotice) -> None:
        for notifier in self.notifiers:
            try:
                notifier.notify(notice)
            except Exception:  # noqa: BLE001 - a broken notifier must not break auditing
                log.exception("alert notifier failed")

    # -- AlertSink (verify failures) ----------------------------------------------

    def chain_failure(self, report: VerifyReport) -> None:
        """Called by ``AuditTrail.verify`` after it chained the Security Alert.

        That record already passed through ``on_append`` (context rule
        ``chain_integrity``), which queued the notice; nothing more to do.
        """
        return None


def _within(state: AlertState | None, now: datetime, window_seconds: int) -> bool:
    """The rule fired for this key less than ``window_seconds`` ago (never for window 0)."""
    return (state is not None and bool(window_seconds)
            and now < state.last_alert_at + timedelta(seconds=window_seconds))


def _drop_notices(session: Session) -> None:
    session.info.pop(_SESSION_KEY, None)


def install(trail: Any, engine: AlertEngine) -> AlertEngine:
    """Register the engine on an ``AuditTrail`` (observer + verify sink)."""
    trail.add_observer(engine)
    trail.add_alert_sink(engine)
    return engine

