"""Audit benchmark: appends per second under 8 concurrent writers, SQLite and PostgreSQL.

Prints ONE JSON line, e.g.::

    {"bench": "audit", "writers": 8, "appends_per_writer": 200,
     "sqlite_appends_per_s": 812.4, "postgresql_appends_per_s": 1490.1,
     "cstore_audit_overhead_ratio": null}

Each append is one committed transaction holding one DICOM Instances
Transferred record with an encrypted patient object (the common case), and
the chain is verified afterwards (the figure only counts if it verifies).

``cstore_audit_overhead_ratio`` is filled by ``cstore_overhead_ratio`` below:
a hook for the ingest benchmark (C-STORE rate with auditing / without).

Environment: ``DICOMVAULT_BENCH_PG_URL`` (admin URL, default the test server),
``DICOMVAULT_BENCH_APPENDS`` (per writer, default 200), ``DICOMVAULT_BENCH_BACKENDS``.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text

import dicomvault.audit.models  # noqa: F401 - register the audit tables
from dicomvault.audit.chain import AuditTrail
from dicomvault.audit.events import (
    Action,
    AuditEvent,
    EventId,
    Outcome,
    archive_participant,
    patient_object,
    requestor_participant,
    study_object,
)
from dicomvault.crypto.keyring import DataKey, Keyring, LocalKek
from dicomvault.index.base import Base
from dicomvault.index.db import make_engine, make_session_factory

WRITERS = 8
PG_ADMIN = os.environ.get("DICOMVAULT_BENCH_PG_URL",
                          "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@contextmanager
def _sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as d:
        yield f"sqlite:///{Path(d) / 'bench.sqlite3'}"


@contextmanager
def _pg_url() -> Iterator[str]:
    name = f"dvbench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as c:
            c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = :n"), {"n": name})
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def _event(w: int, i: int) -> AuditEvent:
    return AuditEvent(
        event_id=EventId.INSTANCES_TRANSFERRED, action=Action.READ, outcome=Outcome.SUCCESS,
        participants=[requestor_participant(f"u:writer{w}", "10.0.0.1"),
                      archive_participant("bench")],
        objects=[patient_object("pk-bench", f"PID{i}", "DOE^JOHN"),
                 study_object(f"1.2.826.0.1.3680043.8.498.{w}.{i}", ("1.2.840.10008.5.1.4.1.1.2",), 1)],
        door="dicomweb",
    )


def appends_per_second(url: str, per_writer: int) -> float:
    """Throughput of ``AuditTrail.append`` with 8 threads, each append its own transaction."""
    engine = make_engine(url, pool_size=WRITERS)
    Base.metadata.create_all(engine)
    dek = DataKey.generate()
    trail = AuditTrail(make_session_factory(engine), Keyring(LocalKek.generate(),
                       secrets.token_bytes(32)), lambda _k: dek, node_id="bench")
    barrier = threading.Barrier(WRITERS + 1)

    def work(w: int) -> None:
        barrier.wait()
        for i in range(per_writer):
            trail.append([_event(w, i)])

    threads = [threading.Thread(target=work, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    report = trail.verify(raise_alert=False)
    engine.dispose()
    if not report.ok or report.checked != WRITERS * per_writer:
        raise SystemExit(f"chain did not verify after the benchmark: {report}")
    return round(WRITERS * per_writer / elapsed, 1)


def cstore_overhead_ratio() -> float | None:
    """Hook for the lead: C-STORE ingest rate with auditing divided by the rate without.

    Return None until the ingest benchmark provides both runs.
    """
    return None


def main() -> None:
    per_writer = int(os.environ.get("DICOMVAULT_BENCH_APPENDS", "200"))
    backends = os.environ.get("DICOMVAULT_BENCH_BACKENDS", "sqlite,postgresql").split(",")
    sources: dict[str, Callable[[], AbstractContextManager[str]]] = {
        "sqlite": _sqlite_url, "postgresql": _pg_url}
    result: dict[str, object] = {"bench": "audit", "writers": WRITERS,
                                 "appends_per_writer": per_writer}
    for name in backends:
        with sources[name]() as url:
            result[f"{name}_appends_per_s"] = appends_per_second(url, per_writer)
    result["cstore_audit_overhead_ratio"] = cstore_overhead_ratio()
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
