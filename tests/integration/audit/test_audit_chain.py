"""The hash chain: appends, PHI sealing, concurrency, tamper detection (issue 4 §1-2)."""

from __future__ import annotations

import json
import threading

import pytest
from audit_factories import access_event, login_event
from sqlalchemy import delete, select, update

from dicomvault.audit.chain import AuditTrail
from dicomvault.audit.checkpoint import CheckpointService
from dicomvault.audit.models import AuditRecord, AuditSubject
from dicomvault.audit.record import ERASED
from dicomvault.errors import UnavailableError
from dicomvault.index.db import unit_of_work

pytestmark = pytest.mark.integration


def _security_alerts(trail: AuditTrail) -> list[str]:
    with unit_of_work(trail.session_factory) as s:
        rows = s.scalars(select(AuditRecord).where(AuditRecord.event_code == "110113")).all()
        return [trail.decode(r).outcome_description for r in rows]


def test_append_assigns_consecutive_seqs_and_verifies(trail: AuditTrail) -> None:
    first = trail.append([access_event(0), access_event(1)])
    second = trail.append([login_event(True)])
    assert first == [1, 2]
    assert second == [3]
    report = trail.verify()
    assert report.ok, report
    assert report.checked == 3


def test_append_stores_phi_only_as_ciphertext(trail: AuditTrail) -> None:
    trail.append([access_event(7)])
    with unit_of_work(trail.session_factory) as s:
        body = s.scalars(select(AuditRecord.body)).one()
    assert "PID-7" not in body and "DOE^JANE7" not in body
    record = trail.get(1)
    assert record is not None
    patient = record.objects[0]
    assert (patient.patient_id, patient.patient_name) == ("PID-7", "DOE^JANE7")


def test_shredded_dek_reads_erased_and_chain_still_verifies(trail: AuditTrail, deks) -> None:
    trail.append([access_event(1), access_event(2, patient="pk-2")])
    deks.shred("pk-1")
    erased, kept = trail.get(1), trail.get(2)
    assert erased is not None and kept is not None
    assert erased.objects[0].patient_id == ERASED
    assert erased.objects[0].patient_name == ERASED
    assert kept.objects[0].patient_id == "PID-2"
    assert trail.verify().ok


def test_append_without_patient_key_fails_closed(trail: AuditTrail) -> None:
    with pytest.raises(UnavailableError):
        trail.append([access_event(1, patient="pk-unknown")])
    assert trail.head()[0] == 0


def test_append_in_caller_transaction_rolls_back_with_it(trail: AuditTrail) -> None:
    with pytest.raises(RuntimeError):
        with unit_of_work(trail.session_factory) as s:
            trail.append([access_event(1)], session=s)
            raise RuntimeError("the data write failed")
    assert trail.head()[0] == 0
    with unit_of_work(trail.session_factory) as s:
        assert trail.append([access_event(2)], session=s) == [1]
    assert trail.head()[0] == 1
    assert trail.verify().ok


def test_concurrent_writers_keep_one_unbroken_chain(trail: AuditTrail) -> None:
    writers, per_writer = 8, 15
    errors: list[BaseException] = []

    def work(w: int) -> None:
        try:
            for i in range(per_writer):
                trail.append([access_event(w * 100 + i)])
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    report = trail.verify()
    assert report.ok, report
    assert report.checked == writers * per_writer


# --- tampering -------------------------------------------------------------------

def _edit(s, seq: int) -> None:
    row = s.get(AuditRecord, seq)
    body = json.loads(row.body)
    body["outcome_description"] = "nothing to see"
    row.body = json.dumps(body, sort_keys=True, separators=(",", ":"))


def _edit_column(s, seq: int) -> None:
    s.execute(update(AuditRecord).where(AuditRecord.seq == seq).values(user_id="u:mallory"))


def _delete(s, seq: int) -> None:
    s.execute(delete(AuditRecord).where(AuditRecord.seq == seq))


def _reorder(s, seq: int) -> None:
    a, b = s.get(AuditRecord, seq), s.get(AuditRecord, seq + 1)
    fields = ("body", "hash", "prev_hash", "event_time", "recorded_at")
    va, vb = [getattr(a, f) for f in fields], [getattr(b, f) for f in fields]
    for f, x, y in zip(fields, vb, va, strict=True):
        setattr(a, f, x)
        setattr(b, f, y)


def _insert(s, seq: int) -> None:
    # Shift the tail up by one and forge a record in the gap (copying a neighbour).
    for row in sorted(s.scalars(select(AuditRecord).where(AuditRecord.seq >= seq)),
                      key=lambda r: -r.seq):
        s.execute(update(AuditSubject).where(AuditSubject.seq == row.seq).values(seq=row.seq + 1))
        s.execute(update(AuditRecord).where(AuditRecord.seq == row.seq).values(seq=row.seq + 1))
    src = s.get(AuditRecord, seq - 1)
    s.add(AuditRecord(
        seq=seq, event_time=src.event_time, recorded_at=src.recorded_at, event_code=src.event_code,
        action=src.action, outcome=src.outcome, user_id=src.user_id, address=src.address,
        door=src.door, instance_count=src.instance_count, body=src.body, prev_hash=src.hash,
        hash=src.hash,
    ))


def _delete_subject(s, seq: int) -> None:
    s.execute(delete(AuditSubject).where(AuditSubject.seq == seq, AuditSubject.kind == "patient"))


TAMPERING = [
    # (name, action, bad record reported, reason fragment)
    ("edit-body", _edit, 4, "altered"),
    ("edit-column", _edit_column, 4, "columns altered"),
    ("delete", _delete, 4, "missing"),
    ("reorder", _reorder, 4, "broken link"),
    ("insert", _insert, 4, "altered"),
    ("drop-search-key", _delete_subject, 4, "subjects"),
]


@pytest.mark.parametrize(("name", "tamper", "bad_seq", "reason"), TAMPERING,
                         ids=[t[0] for t in TAMPERING])
def test_verify_names_tampered_record_and_raises_alert(
    trail: AuditTrail, name, tamper, bad_seq: int, reason: str
) -> None:
    trail.append([access_event(i) for i in range(8)])
    assert trail.verify().ok
    with unit_of_work(trail.session_factory) as s:
        tamper(s, bad_seq)
    report = trail.verify()
    assert not report.ok
    assert report.first_bad_seq == bad_seq
    assert reason in report.reason
    alerts = _security_alerts(trail)
    assert len(alerts) == 1
    assert f"record {bad_seq}" in alerts[0]


def test_verify_detects_truncated_tail_via_checkpoint(trail: AuditTrail, keyring, tmp_path) -> None:
    trail.append([access_event(i) for i in range(6)])
    cps = CheckpointService(trail.session_factory, keyring, export_dir=tmp_path / "worm")
    cp = cps.emit()
    assert cp is not None and cp.seq == 6
    assert trail.verify(export_dir=str(tmp_path / "worm")).ok
    with unit_of_work(trail.session_factory) as s:
        s.execute(delete(AuditSubject).where(AuditSubject.seq > 3))
        s.execute(delete(AuditRecord).where(AuditRecord.seq > 3))
    report = trail.verify(export_dir=str(tmp_path / "worm"))
    assert not report.ok
    assert report.first_bad_seq == 4
    assert "truncated" in report.reason
    assert any("record 4" in a for a in _security_alerts(trail))


def test_exported_checkpoint_catches_truncation_when_db_checkpoints_are_deleted(
    trail: AuditTrail, keyring, tmp_path
) -> None:
    from dicomvault.audit.models import AuditCheckpoint

    trail.append([access_event(i) for i in range(5)])
    CheckpointService(trail.session_factory, keyring, export_dir=tmp_path).emit()
    with unit_of_work(trail.session_factory) as s:
        s.execute(delete(AuditCheckpoint))
        s.execute(delete(AuditSubject).where(AuditSubject.seq == 5))
        s.execute(delete(AuditRecord).where(AuditRecord.seq == 5))
    assert trail.verify(raise_alert=False).ok  # the database alone cannot tell
    report = trail.verify(export_dir=str(tmp_path))
    assert not report.ok and report.first_bad_seq == 5


_WORKER = r"""
import sys
from dicomvault.audit.chain import AuditTrail
from dicomvault.audit.events import (Action, AuditEvent, EventId, Outcome, requestor_participant,
                                     user_object)
from dicomvault.crypto.keyring import Keyring, LocalKek
from dicomvault.index.db import make_engine, make_session_factory
url, root, n, tag = sys.argv[1], bytes.fromhex(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
trail = AuditTrail(make_session_factory(make_engine(url)), Keyring(LocalKek.generate(), root),
                   lambda _k: None, node_id=f"proc-{tag}")
for i in range(n):
    trail.append([AuditEvent(EventId.USER_AUTHENTICATION, Action.EXECUTE, Outcome.SUCCESS,
                             [requestor_participant(f"user-{tag}-{i}", "10.1.1.1")],
                             [user_object(f"user-{tag}-{i}")])])
"""


def test_concurrent_processes_keep_one_chain_on_postgresql(pg_url: str) -> None:
    import secrets
    import subprocess
    import sys

    from dicomvault.crypto.keyring import Keyring, LocalKek
    from dicomvault.index.base import Base
    from dicomvault.index.db import make_engine, make_session_factory

    engine = make_engine(pg_url)
    Base.metadata.create_all(engine)
    root = secrets.token_bytes(32)
    procs, per = 4, 40
    running = [
        subprocess.Popen([sys.executable, "-c", _WORKER, pg_url, root.hex(), str(per), str(p)])
        for p in range(procs)
    ]
    assert [p.wait(timeout=240) for p in running] == [0] * procs
    trail = AuditTrail(make_session_factory(engine), Keyring(LocalKek.generate(), root),
                       lambda _k: None)
    report = trail.verify()
    engine.dispose()
    assert report.ok, report
    assert report.checked == procs * per


class _Exploding:
    """An alert rule that fails on a marked event (stands in for a database failure mid-append)."""

    def on_append(self, session, records):
        if any(r.event.context.get("boom") for r in records):
            raise RuntimeError("rule failed")
        return []


def test_failed_group_commit_fails_the_caller_and_releases_the_chain(trail: AuditTrail) -> None:
    import dataclasses

    trail.add_observer(_Exploding())
    trail.append([access_event(0)])
    with pytest.raises(UnavailableError):
        trail.append([dataclasses.replace(access_event(1), context={"boom": True})])
    assert trail.head()[0] == 1
    assert trail.append([access_event(2)]) == [2]
    with pytest.raises(UnavailableError):
        with unit_of_work(trail.session_factory) as s:
            trail.append([dataclasses.replace(access_event(3), context={"boom": True})], session=s)
    assert trail.verify().ok


def test_group_commit_returns_each_callers_own_seqs(trail: AuditTrail) -> None:
    results: dict[int, list[int]] = {}

    def work(w: int) -> None:
        results[w] = trail.append([access_event(w * 10 + i) for i in range(3)])

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    all_seqs = sorted(s for seqs in results.values() for s in seqs)
    assert all_seqs == list(range(1, 25))
    for w, seqs in results.items():
        assert seqs == list(range(seqs[0], seqs[0] + 3))  # one caller's records stay together
        for seq in seqs:
            rec = trail.get(seq)
            assert rec.objects[0].patient_id in {f"PID-{w * 10 + i}" for i in range(3)}


def test_append_soon_joins_the_next_append_and_reads_see_it(trail: AuditTrail) -> None:
    """A record queued with append_soon is not committed on its own; the next append
    commits it first (chain order), and reading the trail commits it too."""
    trail.append_soon([access_event(1)], delay=60)
    with unit_of_work(trail.session_factory) as s:
        assert s.scalars(select(AuditRecord.seq)).all() == []
    assert trail.append([login_event(True)]) == [2]
    assert trail.get(1).objects[0].patient_id == "PID-1"
    trail.append_soon([access_event(3)], delay=60)
    assert trail.head()[0] == 3  # head() flushes first
    assert trail.verify().ok


def test_append_soon_commits_by_itself_and_on_close(trail: AuditTrail) -> None:
    import time

    trail.append_soon([access_event(1)], delay=0.05)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with unit_of_work(trail.session_factory) as s:
            if s.scalars(select(AuditRecord.seq)).all() == [1]:
                break
        time.sleep(0.02)
    with unit_of_work(trail.session_factory) as s:
        assert s.scalars(select(AuditRecord.seq)).all() == [1]
    trail.append_soon([access_event(2)], delay=60)
    trail.flush()
    with unit_of_work(trail.session_factory) as s:
        assert s.scalars(select(AuditRecord.seq)).all() == [1, 2]
