"""Concurrent ingest of one new patient/study from many threads (SQLite and PostgreSQL)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from io import BytesIO

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from dicomvault.errors import ConflictError
from dicomvault.index.models import Instance, Patient, Series, Study
from tests.integration.archive.test_archive import make_instance

pytestmark = pytest.mark.integration


def test_parallel_ingest_same_study_consistent(services, technologist):
    study, series = generate_uid(), generate_uid()
    payloads = [make_instance(study, series, PatientID="CONC-1", PatientName="Par^Allel") for _ in range(24)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda d: services.archive.ingest(technologist, d, door="test"), payloads))
    assert {r.status for r in results} == {"stored"}
    with services.session_factory() as s:
        assert s.execute(select(func.count(Patient.id))).scalar() == 1
        assert s.execute(select(func.count(Study.id))).scalar() == 1
        assert s.execute(select(func.count(Series.id))).scalar() == 1
        assert s.execute(select(func.count(Instance.id))).scalar() == 24
        assert s.execute(select(Study.num_instances)).scalar() == 24
    assert len(list(services.store.keys())) == 24
    assert services.audit.verify().ok


def test_refused_ingests_in_parallel_leave_the_others_committed(services, technologist):
    """Group commit: a refused instance (different bytes under a stored UID) fails alone,
    even when it shares a transaction with concurrent stores; nothing it sent is kept."""
    study, series = generate_uid(), generate_uid()
    taken = [make_instance(study, series, PatientID="CONC-2") for _ in range(8)]
    for data in taken:
        services.archive.ingest(technologist, data, door="test")
    def different_bytes(data: bytes) -> bytes:
        ds = pydicom.dcmread(BytesIO(data))
        ds.SeriesDescription = "other bytes, same SOP Instance UID"
        out = BytesIO()
        ds.save_as(out)
        return out.getvalue()

    conflicting = [different_bytes(d) for d in taken]
    fresh = [make_instance(study, series, PatientID="CONC-2") for _ in range(16)]
    work = [d for pair in zip(conflicting, fresh[:8], strict=True) for d in pair] + fresh[8:]

    def ingest(data: bytes) -> str:
        try:
            return services.archive.ingest(technologist, data, door="test").status
        except ConflictError:
            return "refused"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(ingest, work))
    assert outcomes.count("refused") == 8 and outcomes.count("stored") == 16
    with services.session_factory() as s:
        assert s.execute(select(func.count(Instance.id))).scalar() == 24
        assert s.execute(select(Study.num_instances)).scalar() == 24
        assert s.execute(select(Series.num_instances)).scalar() == 24
    assert len(list(services.store.keys())) == 24  # no blob of a refused instance is kept
    assert services.audit.verify().ok
