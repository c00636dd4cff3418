"""Concurrent ingest of one new patient/study from many threads (SQLite and PostgreSQL)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select

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
