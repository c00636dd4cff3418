"""De-identified export into a research collection (issue 5, archive service part)."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicomvault.audit.models import AuditRecord
from dicomvault.deid.profile import build_config
from dicomvault.errors import ForbiddenError, NotFoundError
from dicomvault.services.types import FindQuery
from tests.integration.archive.test_archive import PHI_TOKENS, make_instance
from tests.integration.conftest import make_principal

pytestmark = pytest.mark.integration


@pytest.fixture
def exported(services, technologist, radiologist):
    study, series = generate_uid(), generate_uid()
    for _ in range(2):
        services.archive.ingest(technologist, make_instance(study, series, **PHI_TOKENS), door="test")
    config = build_config("basic", [], project="LUNG-1", ocr=False)
    report = services.deid_export.export(radiologist, [study], config, door="test")
    return study, report


def test_researcher_sees_only_the_deidentified_collection(services, exported):
    study, report = exported
    researcher = make_principal("researcher")
    assert report.exported == 2 and not report.refused
    rows = services.archive.find(researcher, FindQuery("STUDY", {}), door="test").rows
    assert [r["StudyInstanceUID"] for r in rows] == sorted(report.collection_study_uids)
    assert study not in {r["StudyInstanceUID"] for r in rows}
    with pytest.raises(NotFoundError):
        services.archive.locate(researcher, "STUDY", {"StudyInstanceUID": study}, door="test", purpose="t")
    refs = services.archive.locate(researcher, "STUDY", {"StudyInstanceUID": rows[0]["StudyInstanceUID"]},
                                   door="test", purpose="t")
    assert len(refs) == 2
    for ref in refs:
        ds = pydicom.dcmread(io.BytesIO(services.archive.read_part10(ref)))
        assert ds.PatientIdentityRemoved == "YES"
        text = str(ds)
        for value in PHI_TOKENS.values():
            assert value.split("^")[0] not in text


def test_source_study_unchanged(services, exported, technologist):
    study, _ = exported
    rows = services.archive.find(technologist, FindQuery("STUDY", {"StudyInstanceUID": study}), door="test").rows
    assert rows[0]["PatientName"] == PHI_TOKENS["PatientName"]


def test_export_needs_permission_and_is_audited(services, exported, technologist):
    study, _ = exported
    researcher = make_principal("researcher")
    with pytest.raises((ForbiddenError, NotFoundError)):
        services.deid_export.export(researcher, [study], build_config(project="X", ocr=False), door="test")
    with services.session_factory() as s:
        exports = s.execute(select(AuditRecord).where(AuditRecord.event_code == "110106")).scalars().all()
    assert len(exports) == 1


def test_reidentification_needs_its_permission_and_is_audited(services, exported):
    _study, report = exported
    researcher = make_principal("researcher")
    officer = make_principal("privacy-officer")
    rows = services.archive.find(researcher, FindQuery("STUDY", {}), door="test").rows
    pseudonym_id = rows[0]["PatientID"]
    with pytest.raises((ForbiddenError, NotFoundError)):
        services.deid_export.reidentify(researcher, "LUNG-1", pseudonym_id, door="test")
    originals = dict(services.deid_export.reidentify(officer, "LUNG-1", pseudonym_id, door="test"))
    assert originals.get("patient_id") == PHI_TOKENS["PatientID"]
