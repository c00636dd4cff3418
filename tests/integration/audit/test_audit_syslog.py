"""Forwarding to a real rsyslog over mutually authenticated TLS (RFC 5424/5425, IHE ATNA).

The collector is stopped for a while and the forwarding process is replaced
mid-outage; every record must still arrive.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import xmlschema
from audit_factories import access_event, login_event
from rsyslog_harness import Rsyslog, free_port, make_pki

from dicomvault.audit.chain import AuditTrail
from dicomvault.audit.export import dicom_xml
from dicomvault.audit.export.syslog import SyslogForwarder, client_context

pytestmark = pytest.mark.integration
SEQ = re.compile(r'sequenceId="(\d+)"')


def _received(rs: Rsyslog) -> set[int]:
    return {int(m.group(1)) for line in rs.lines() if (m := SEQ.search(line[1]))}


def _wait(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.fixture
def collector(tmp_path: Path):
    pki = make_pki(tmp_path / "pki")
    rs = Rsyslog(tmp_path / "rsyslog", free_port(), pki)
    rs.start()
    yield rs
    rs.stop()


def _forwarder(trail: AuditTrail, rs: Rsyslog) -> SyslogForwarder:
    ctx = client_context(str(rs.pki["ca"]), str(rs.pki["client_cert"]), str(rs.pki["client_key"]))
    return SyslogForwarder(trail, host="127.0.0.1", port=rs.port, ssl_context=ctx,
                           hostname="dv-test", confirm_after=0.5, backoff_initial=0.2,
                           backoff_max=1.0, poll_interval=0.05)


def test_syslog_collector_receives_every_record_in_ps315_xml(
    factory, keyring, deks, collector: Rsyslog
) -> None:
    trail = AuditTrail(factory, keyring, deks, node_id="test-node", syslog_outbox=True)
    fwd = _forwarder(trail, collector)
    fwd.start()
    try:
        trail.append([access_event(i) for i in range(10)] + [login_event(False)])
        assert _wait(lambda: fwd.pending() == 0), "outbox not drained"
        assert _wait(lambda: _received(collector) >= set(range(1, 12)))
    finally:
        fwd.stop()
    schema = xmlschema.XMLSchema(str(dicom_xml.SCHEMA_PATH))
    lines = {int(SEQ.search(line[1]).group(1)): line for line in collector.lines()}
    for seq, (msgid, _sd, pri, app, msg) in lines.items():
        assert msgid == "IHE+RFC-3881"
        assert app == "dicomvault"
        assert int(pri) // 8 == 10  # facility 10, security/authorization
        assert int(pri) % 8 == (4 if seq == 11 else 5)  # failed login → warning
        schema.validate(msg.lstrip("\ufeff"))
    assert "PID-3" in lines[4][4]  # the collector gets the clear values, over TLS only


def test_syslog_outage_and_forwarder_restart_lose_nothing(
    factory, keyring, deks, collector: Rsyslog
) -> None:
    trail = AuditTrail(factory, keyring, deks, node_id="test-node", syslog_outbox=True)
    first = _forwarder(trail, collector)
    first.start()
    trail.append([access_event(i) for i in range(20)])
    assert _wait(lambda: first.pending() == 0)

    collector.stop()  # collector outage
    for i in range(20, 40):
        trail.append([access_event(i)])
    time.sleep(2.0)  # the forwarder keeps failing and backing off
    assert first.pending() > 0
    first.stop(flush_timeout=0.5)  # our process restarts during the outage

    trail.append([login_event(True) for _ in range(10)])
    collector.start()
    second = _forwarder(trail, collector)
    second.start()
    try:
        assert _wait(lambda: second.pending() == 0, timeout=60), "outbox not drained after outage"
        assert _wait(lambda: _received(collector) >= set(range(1, 51)), timeout=30)
    finally:
        second.stop()
    assert _received(collector) == set(range(1, 51))


def test_syslog_collector_restart_under_steady_traffic_loses_nothing(
    factory, keyring, deks, collector: Rsyslog
) -> None:
    import threading

    trail = AuditTrail(factory, keyring, deks, node_id="test-node", syslog_outbox=True)
    fwd = _forwarder(trail, collector)
    fwd.start()
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:
        i = 0
        while not stop.is_set():
            written.extend(trail.append([access_event(i)]))
            i += 1
            time.sleep(0.01)

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(1.0)
        collector.stop()  # messages are in flight when the collector goes away
        time.sleep(1.5)
        collector.start()
        time.sleep(1.0)
    finally:
        stop.set()
        t.join()
    try:
        assert _wait(lambda: fwd.pending() == 0, timeout=60)
        assert _wait(lambda: _received(collector) >= set(written), timeout=30)
    finally:
        fwd.stop()
    assert len(written) > 100
    assert fwd.connection_losses >= 1  # the outage was noticed, and nothing was lost


def test_only_one_forwarder_sends_on_postgresql_and_the_other_takes_over(
    pg_url: str, keyring, deks, collector: Rsyslog
) -> None:
    from dicomvault.index.base import Base
    from dicomvault.index.db import make_engine, make_session_factory

    engine = make_engine(pg_url)
    Base.metadata.create_all(engine)
    trail = AuditTrail(make_session_factory(engine), keyring, deks, syslog_outbox=True)
    a, b = _forwarder(trail, collector), _forwarder(trail, collector)
    a.start()
    time.sleep(0.3)
    b.start()
    trail.append([access_event(i) for i in range(10)])
    assert _wait(lambda: a.pending() == 0)
    assert (a.sent, b.sent) == (10, 0)
    a.stop()  # node A leaves: B takes over
    trail.append([access_event(i) for i in range(10, 15)])
    try:
        assert _wait(lambda: b.pending() == 0)
    finally:
        b.stop()
        engine.dispose()
    assert b.sent == 5
    assert _received(collector) == set(range(1, 16))
