"""Alert rules: Security Alert records, one per rule window, webhook notification (issue 4 §5)."""

from __future__ import annotations

import dataclasses
import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from audit_factories import access_event, login_event
from sqlalchemy import select

from dicomvault.audit.alerts import AlertEngine, WebhookNotifier, install
from dicomvault.audit.chain import AuditTrail
from dicomvault.audit.events import (
    Action,
    AuditEvent,
    EventId,
    EventType,
    Outcome,
    requestor_participant,
    security_alert_event,
    study_object,
    tls_handshake_failure,
)
from dicomvault.audit.metrics import Metrics
from dicomvault.audit.models import AuditRecord
from dicomvault.config import AuditSettings, PeerSettings
from dicomvault.index.db import unit_of_work

pytestmark = pytest.mark.integration
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday, 10:00 UTC


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def webhook():
    handler = type("Hook", (_Hook,), {"received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    notifier = WebhookNotifier(f"http://127.0.0.1:{server.server_address[1]}/alerts", backoff=0.1)
    yield notifier, handler.received
    notifier.close()
    server.shutdown()


SETTINGS = AuditSettings(failed_login_threshold=5, failed_login_window_seconds=300,
                         bulk_retrieve_threshold=1000, bulk_retrieve_window_seconds=600,
                         working_hours="07-19")
PEERS = (PeerSettings(ae_title="CT01", host="10.9.9.9"),)


@pytest.fixture
def alerting(trail: AuditTrail, keyring, webhook):
    notifier, received = webhook
    metrics = Metrics()
    engine = install(trail, AlertEngine(SETTINGS, keyring, node_id="test-node", peers=PEERS,
                                        notifiers=[notifier], metrics=metrics, local_tz=UTC))
    return trail, engine, notifier, received, metrics


def _at(event: AuditEvent, t: datetime) -> AuditEvent:
    return dataclasses.replace(event, time=t)


def _alerts(trail: AuditTrail, rule: str | None = None) -> list:
    with unit_of_work(trail.session_factory) as s:
        rows = s.scalars(select(AuditRecord).where(AuditRecord.event_code == "110113")
                         .order_by(AuditRecord.seq)).all()
        records = [trail.decode(r) for r in rows]
    return [r for r in records if rule is None or r.context.get("rule") == rule]


def test_brute_force_raises_one_alert_per_rule_window(alerting) -> None:
    trail, _engine, notifier, received, metrics = alerting
    for i in range(20):  # 20 failures in 20 s: one window
        trail.append([_at(login_event(False, user="bob", address="10.0.0.66"), T0 + timedelta(seconds=i))])
    assert len(_alerts(trail, "brute_force_address")) == 1
    assert len(_alerts(trail, "brute_force_account")) == 1
    first = _alerts(trail, "brute_force_address")[0]
    assert first.types[0].code == "DV003" and first.outcome == 4
    # The next window: more failures fire once more per rule.
    later = T0 + timedelta(seconds=301)
    for i in range(6):
        trail.append([_at(login_event(False, user="bob", address="10.0.0.66"), later + timedelta(seconds=i))])
    assert len(_alerts(trail, "brute_force_address")) == 2
    assert len(_alerts(trail, "brute_force_account")) == 2
    notifier.flush()
    assert sorted(n["rule"] for n in received) == ["brute_force_account"] * 2 + ["brute_force_address"] * 2
    assert trail.verify().ok
    text = metrics.render()[0].decode()
    assert 'dicomvault_security_alerts_total{rule="brute_force_address"} 2.0' in text


def test_brute_force_below_threshold_raises_nothing(alerting) -> None:
    trail, *_ = alerting
    for i in range(4):
        trail.append([_at(login_event(False, user=f"user{i}", address=f"10.0.1.{i}"), T0)])
    for i in range(4):
        trail.append([_at(login_event(False, user="carol", address=f"10.0.2.{i}"),
                          T0 + timedelta(seconds=100 * i))])
    assert _alerts(trail) == []


def test_bulk_retrieval_trips_for_one_principal(alerting) -> None:
    trail, *_ = alerting
    for i in range(3):  # 3 x 400 = 1200 > 1000 within the window
        trail.append([_at(access_event(i, user="u:eve", instances=400), T0 + timedelta(seconds=i))])
    for i in range(2):
        trail.append([_at(access_event(i, user="u:dan", instances=400), T0 + timedelta(seconds=i))])
    bulk = _alerts(trail, "bulk_retrieval")
    assert len(bulk) == 1
    assert bulk[0].types[0].code == "DV004"
    assert any(p.user_id == "u:eve" for p in bulk[0].participants)


def test_break_glass_use_notifies_and_access_under_it_alerts(alerting) -> None:
    trail, _e, notifier, received, _m = alerting
    granted = security_alert_event("u:alice", event_type=EventType.EMERGENCY_OVERRIDE_STARTED,
                                   address="10.0.0.5", objects=[study_object("1.2.3")],
                                   context={"break_glass": True})
    trail.append([_at(granted, T0)])
    assert _alerts(trail, "break_glass") == []  # already a Security Alert: notify only
    trail.append([_at(dataclasses.replace(access_event(1), context={"break_glass": True}), T0)])
    assert len(_alerts(trail, "break_glass")) == 1
    notifier.flush()
    assert [n["rule"] for n in received] == ["break_glass", "break_glass"]


@pytest.mark.parametrize(("hour", "alerts"), [(3, 1), (6, 1), (7, 0), (18, 0), (19, 1), (23, 1)])
def test_outside_hours_access_alerts(alerting, hour: int, alerts: int) -> None:
    trail, *_ = alerting
    when = T0.replace(hour=hour)
    trail.append([_at(access_event(1), when)])
    trail.append([_at(access_event(2), when + timedelta(minutes=5))])  # same hour window: no repeat
    assert len(_alerts(trail, "outside_hours")) == alerts


@pytest.mark.parametrize(("address", "alerts"), [("10.9.9.9", 1), ("192.0.2.7", 0)])
def test_tls_failure_from_known_peer_alerts(alerting, address: str, alerts: int) -> None:
    trail, *_ = alerting
    for _ in range(3):
        trail.append([_at(tls_handshake_failure(address, "test-node", ae_title="CT01"), T0)])
    assert len(_alerts(trail, "tls_handshake")) == alerts


def test_chain_failure_alert_is_notified(alerting) -> None:
    trail, _e, notifier, received, _m = alerting
    trail.append([_at(access_event(i), T0) for i in range(3)])
    with unit_of_work(trail.session_factory) as s:
        s.get(AuditRecord, 2).outcome = 12
    report = trail.verify()
    assert not report.ok and report.first_bad_seq == 2
    notifier.flush()
    assert [n["rule"] for n in received] == ["chain_integrity"]
    assert received[0]["seq"] is not None


def test_rolled_back_alert_is_not_notified(alerting) -> None:
    trail, _e, notifier, received, _m = alerting
    with pytest.raises(RuntimeError):
        with unit_of_work(trail.session_factory) as s:
            trail.append([_at(dataclasses.replace(access_event(1), context={"break_glass": True}),
                              T0)], session=s)
            raise RuntimeError("request failed")
    notifier.flush()
    assert received == []
    assert _alerts(trail) == []


def test_failed_access_does_not_count_toward_bulk(alerting) -> None:
    trail, *_ = alerting
    failed = AuditEvent(EventId.INSTANCES_TRANSFERRED, Action.READ, Outcome.MINOR_FAILURE,
                        [requestor_participant("u:zed", "10.0.0.8")],
                        [study_object("1.2.3", ("1.2.840.10008.5.1.4.1.1.2",), 5000)])
    trail.append([_at(failed, T0)])
    assert _alerts(trail, "bulk_retrieval") == []


def test_brute_force_from_concurrent_writers_still_alerts_once(alerting) -> None:
    trail, *_ = alerting

    def attack(w: int) -> None:
        for i in range(5):
            trail.append([_at(login_event(False, user="root", address="10.0.0.99"),
                              T0 + timedelta(seconds=w + i))])

    threads = [threading.Thread(target=attack, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(_alerts(trail, "brute_force_address")) == 1
    assert len(_alerts(trail, "brute_force_account")) == 1
    assert trail.verify().ok


def _capture_sums(engine):
    """Record the statements that sum audit records or buckets (listener, remover)."""
    from sqlalchemy import event

    seen: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany) -> None:
        if "sum(audit_record.instance_count)" in statement or "FROM audit_rate_bucket" in statement:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    return seen, lambda: event.remove(engine, "before_cursor_execute", capture)


def _record_sums(seen) -> list:
    return [(st, p) for st, p in seen if "sum(audit_record.instance_count)" in st]


def test_bulk_rule_window_sum_reads_only_the_principals_codes_in_the_window(alerting) -> None:
    """Past the buckets' bound the rule sums the records themselves: it must be an index
    range scan over the principal's retrieves in the window, not a scan of its whole
    history (a busy service account has millions of records, most of them stores under
    the same event code)."""
    trail, *_ = alerting
    engine = trail.session_factory.kw["bind"]
    seen, stop = _capture_sums(engine)
    try:
        trail.append([_at(access_event(1, user="u:eve", instances=1500), T0)])
    finally:
        stop()
    sums = _record_sums(seen)
    assert len(sums) == 1
    statement, parameters = sums[0]
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement,
                                                                     parameters))
        else:
            conn.exec_driver_sql("SET enable_seqscan = off")  # tiny test tables: ask for the index plan
            plan = " ".join(str(r[0]) for r in conn.exec_driver_sql("EXPLAIN " + statement, parameters))
    assert "ix_audit_record_user_kind_time" in plan, plan
    assert len(_alerts(trail, "bulk_retrieval")) == 1


def test_bulk_rule_below_its_bound_never_sums_the_records(alerting, monkeypatch) -> None:
    """Each retrieve counts in its principal's 10 s bucket; while the buckets since the
    window's start stay under the threshold, the records are not read at all.  Old
    buckets are pruned once per bucket and principal, not on every retrieve."""
    from sqlalchemy import text

    from dicomvault.audit import alerts

    calls: list[str] = []
    for name, method in (("_BUCKET_SUM", "first"), ("_BUCKET_PRUNE", "execute")):
        prepared = getattr(alerts, name)
        real = getattr(prepared, method)
        monkeypatch.setattr(prepared, method,
                            lambda *a, _real=real, _name=name, **k: (calls.append(_name), _real(*a, **k))[1])
    trail, *_ = alerting
    engine = trail.session_factory.kw["bind"]
    seen, stop = _capture_sums(engine)
    try:
        for i in range(30):
            trail.append([_at(access_event(i, user="u:eve", instances=30), T0 + timedelta(seconds=i))])
    finally:
        stop()
    assert _record_sums(seen) == []
    assert calls.count("_BUCKET_SUM") == 30  # one bucket sum per retrieve
    assert calls.count("_BUCKET_PRUNE") == 3  # one prune per bucket
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT subject, bucket, total FROM audit_rate_bucket ORDER BY bucket")).all()
    first = int(T0.timestamp()) // 10
    assert [tuple(r) for r in rows] == [("u:eve", first, 300), ("u:eve", first + 1, 300),
                                        ("u:eve", first + 2, 300)]
    assert _alerts(trail, "bulk_retrieval") == []


def test_bulk_rule_bound_over_the_edge_of_the_window_is_checked_exactly(alerting) -> None:
    """A bucket that straddles the window's start counts records from before it: the bound
    trips, the exact sum over the window decides (600 s window, threshold 1000)."""
    trail, *_ = alerting
    trail.append([_at(access_event(1, user="u:eve", instances=900), T0)])
    # 605 s later the window starts at T0 + 5 s: the record at T0 is outside it, in the same bucket.
    trail.append([_at(access_event(2, user="u:eve", instances=200), T0 + timedelta(seconds=605))])
    assert _alerts(trail, "bulk_retrieval") == []
    trail.append([_at(access_event(3, user="u:eve", instances=850), T0 + timedelta(seconds=606))])
    assert len(_alerts(trail, "bulk_retrieval")) == 1  # 200 + 850 within the window


def test_bulk_rule_after_firing_skips_the_sum_for_the_rest_of_the_window(alerting) -> None:
    trail, *_ = alerting
    trail.append([_at(access_event(1, user="u:eve", instances=1200), T0)])
    engine = trail.session_factory.kw["bind"]
    seen, stop = _capture_sums(engine)
    try:
        for i in range(5):
            trail.append([_at(access_event(i, user="u:eve", instances=10), T0 + timedelta(seconds=1 + i))])
    finally:
        stop()
    assert _record_sums(seen) == []
    assert len(_alerts(trail, "bulk_retrieval")) == 1
    # The next window fires again.
    trail.append([_at(access_event(9, user="u:eve", instances=1200), T0 + timedelta(seconds=700))])
    assert len(_alerts(trail, "bulk_retrieval")) == 2


def test_bulk_buckets_older_than_the_horizon_are_dropped(alerting) -> None:
    from sqlalchemy import text

    from dicomvault.audit.alerts import RATE_HORIZON_SECONDS

    trail, *_ = alerting
    trail.append([_at(access_event(1, user="u:eve", instances=5), T0)])
    trail.append([_at(access_event(2, user="u:dan", instances=5), T0)])
    later = T0 + timedelta(seconds=RATE_HORIZON_SECONDS + 20)
    trail.append([_at(access_event(3, user="u:eve", instances=7), later)])
    with trail.session_factory.kw["bind"].connect() as conn:
        rows = conn.execute(text("SELECT subject, total FROM audit_rate_bucket ORDER BY subject")).all()
    assert [tuple(r) for r in rows] == [("u:dan", 5), ("u:eve", 7)]  # only eve's own old bucket went
