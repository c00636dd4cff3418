"""Archive actions through the service layer each leave the expected audit records.

The doors (DIMSE, DICOMweb) translate to these same service calls; a test
driving the real listeners belongs with the door suites.  Every record is
also checked to render as schema-valid PS3.15 XML and a FHIR AuditEvent.
"""

from __future__ import annotations

import pytest
import xmlschema
from pydicom.uid import generate_uid

from dicomvault.audit.export import dicom_xml, fhir
from dicomvault.audit.query import AuditFilter, AuditQueryService
from dicomvault.services.types import FindQuery
from tests.integration.archive.test_archive import make_instance
from tests.integration.conftest import make_principal

pytestmark = pytest.mark.integration
SCHEMA = xmlschema.XMLSchema(str(dicom_xml.SCHEMA_PATH))
AUDITOR = make_principal("auditor", "audra")


def test_store_find_retrieve_delete_leave_expected_records(services) -> None:
    tech = make_principal("technologist", "tina")
    rad = make_principal("radiologist", "rita")
    officer = make_principal("privacy-officer", "otto")
    study = generate_uid()
    data = make_instance(study_uid=study, PatientID="AUD-4711", PatientName="Doors^Dora")
    start, _ = services.audit.head()

    services.archive.ingest(tech, data, door="dimse", source_ae="CT01")
    services.archive.find(rad, FindQuery(level="STUDY", filters={"PatientID": "AUD-4711"}),
                          door="dicomweb")
    refs = services.archive.locate(rad, "STUDY", {"StudyInstanceUID": study}, door="dicomweb",
                                   purpose="retrieve")
    services.archive.record_transfer(rad, refs, door="dicomweb", destination="rita-browser")
    services.archive.delete_study(officer, study, door="rest")

    head, _ = services.audit.head()
    svc = AuditQueryService(services.audit, services.policy)
    records = svc.search(AUDITOR, AuditFilter(after_seq=start, limit=100))
    records = [r for r in records if r.seq <= head]
    got = [(r.event.code, r.action, r.requestor.user_id if r.requestor else None, r.door)
           for r in records]
    # Each call produced its PS3.15 A.5.3 message, attributed to the right principal.
    assert got == [
        ("110104", "C", "user:tina", "dimse"),      # C-STORE / STOW: Instances Transferred, Create
        ("110112", "E", "user:rita", "dicomweb"),   # C-FIND / QIDO: Query
        ("110102", "R", "user:rita", "dicomweb"),   # retrieve: Begin Transferring
        ("110104", "R", "user:rita", "dicomweb"),   # retrieve: Instances Transferred, Read
        ("110105", "D", "user:otto", "rest"),       # DICOM Study Deleted
    ]
    for r in records:
        SCHEMA.validate(dicom_xml.render(r).decode())
        for event in fhir.render(r):
            assert event["resourceType"] == "AuditEvent" and event["agent"]
    stored = next(r for r in records if r.event.code == "110104" and r.action == "C")
    patient = next(o for o in stored.objects if o.type_role == 1)
    assert patient.patient_id == "AUD-4711"        # decrypted with the patient DEK
    assert any(o.object_id == study for o in stored.objects)
    key = patient.patient_key_id
    who = {d.user_id for d in svc.disclosures(AUDITOR, key)}
    assert "user:rita" in who and "user:tina" not in who   # a store is not a disclosure
    assert services.audit.verify().ok
