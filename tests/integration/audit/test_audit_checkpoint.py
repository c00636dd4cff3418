"""Signed checkpoints (Ed25519): periodic, on shutdown, exported write-once (issue 4 §2)."""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

import pytest
from audit_factories import access_event

from dicomvault.audit.chain import AuditTrail
from dicomvault.audit.checkpoint import (
    CheckpointScheduler,
    CheckpointService,
    export_checkpoint,
    load_exported,
)
from dicomvault.crypto.keyring import Keyring, LocalKek

pytestmark = pytest.mark.integration


def test_scheduler_emits_periodically_and_on_stop(trail: AuditTrail, keyring, tmp_path: Path) -> None:
    svc = CheckpointService(trail.session_factory, keyring, export_dir=tmp_path)
    sched = CheckpointScheduler(svc, 0.2)
    trail.append([access_event(0)])
    sched.start()
    time.sleep(0.7)
    trail.append([access_event(1)])
    sched.stop()  # shutdown: one more, covering the last record
    assert sched.emitted >= 3
    exported = load_exported(tmp_path)
    assert max(cp.seq for cp in exported) == 2
    assert len(svc.stored()) == len(exported)
    assert trail.verify(export_dir=str(tmp_path)).ok


def test_exported_checkpoint_is_read_only_and_never_overwritten(trail, keyring, tmp_path) -> None:
    trail.append([access_event(0)])
    cp = CheckpointService(trail.session_factory, keyring).emit()
    path = export_checkpoint(cp, tmp_path)
    assert path.stat().st_mode & 0o222 == 0
    with pytest.raises(FileExistsError):
        export_checkpoint(cp, tmp_path)


def test_forged_checkpoint_signature_is_reported(trail: AuditTrail, keyring, tmp_path) -> None:
    trail.append([access_event(i) for i in range(3)])
    other = Keyring(LocalKek.generate(), secrets.token_bytes(32))
    forged = CheckpointService(trail.session_factory, other).emit()  # signed by a foreign key
    export_checkpoint(forged, tmp_path / "x")
    report = trail.verify(export_dir=str(tmp_path / "x"), raise_alert=False)
    assert not report.ok and "signature invalid" in report.reason


def test_tampered_checkpoint_file_is_reported(trail: AuditTrail, keyring, tmp_path) -> None:
    trail.append([access_event(i) for i in range(3)])
    cp = CheckpointService(trail.session_factory, keyring).emit()
    path = export_checkpoint(cp, tmp_path)
    os.chmod(path, 0o644)
    doc = json.loads(path.read_text())
    doc["seq"] = 2  # claim an older head with the same signature
    path.write_text(json.dumps(doc))
    report = trail.verify(export_dir=str(tmp_path), raise_alert=False)
    assert not report.ok and "signature invalid" in report.reason


def test_trail_checkpoint_exports_to_configured_folder(trail: AuditTrail, tmp_path) -> None:
    trail.checkpoint_export_dir = str(tmp_path / "worm")
    assert trail.checkpoint() is None  # empty chain: nothing to sign
    trail.append([access_event(0)])
    cp = trail.checkpoint()
    assert cp is not None and cp.seq == 1
    assert [c.seq for c in load_exported(tmp_path / "worm")] == [1]


def test_readiness_reports_database_and_chain(trail: AuditTrail) -> None:
    from dicomvault.audit.health import readiness

    trail.append([access_event(0)])
    r = readiness(trail)
    assert r.ready and r.checks == {"database": True, "audit_chain": True}
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    unreachable = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    broken = AuditTrail(sessionmaker(unreachable), trail.keyring, lambda _k: None)
    r = readiness(broken)
    assert r.ready is False and r.checks["database"] is False
