"""DICOM XML (PS3.15 A.5.1) and FHIR AuditEvent (IHE BALP) renderings."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET

import pytest
import xmlschema
from audit_events_table import EVENTS
from fhir.resources.R4B.auditevent import AuditEvent as FhirAuditEvent

from dicomvault.audit.export import dicom_xml, fhir
from dicomvault.audit.record import ERASED

SCHEMA = xmlschema.XMLSchema(str(dicom_xml.SCHEMA_PATH))
NAMES = sorted(EVENTS)


@pytest.mark.parametrize("name", NAMES)
def test_dicom_xml_validates_against_ps315_schema(stored, name: str) -> None:
    xml = dicom_xml.render(stored(EVENTS[name]))
    SCHEMA.validate(xml.decode("utf-8"))
    root = ET.fromstring(xml)
    event_id = root.find("EventIdentification/EventID")
    assert event_id is not None
    assert event_id.get("csd-code") == EVENTS[name].event_id.value.code
    assert b"\n" not in xml.split(b"?>", 1)[1]


def test_dicom_xml_schema_rejects_a_broken_message(stored) -> None:
    root = dicom_xml.to_element(stored(EVENTS["wado"]))
    root.find("EventIdentification").set("EventOutcomeIndicator", "3")
    assert not SCHEMA.is_valid(ET.tostring(root, encoding="unicode"))
    root = dicom_xml.to_element(stored(EVENTS["wado"]))
    root.remove(root.find("AuditSourceIdentification"))
    assert not SCHEMA.is_valid(ET.tostring(root, encoding="unicode"))


def test_dicom_xml_carries_patient_study_and_requestor(stored) -> None:
    root = ET.fromstring(dicom_xml.render(stored(EVENTS["wado"])))
    objs = root.findall("ParticipantObjectIdentification")
    patient = next(o for o in objs if o.get("ParticipantObjectTypeCodeRole") == "1")
    study = next(o for o in objs if o.find("ParticipantObjectIDTypeCode").get("csd-code") == "110180")
    assert patient.get("ParticipantObjectID") == "PID-001"
    assert patient.findtext("ParticipantObjectName") == "DOE^JANE"
    assert study.get("ParticipantObjectID") == "1.2.826.0.1.3680043.8.498.77"
    user = next(a for a in root.findall("ActiveParticipant") if a.get("UserIsRequestor") == "true")
    assert (user.get("UserID"), user.get("NetworkAccessPointTypeCode")) == ("u:alice", "2")
    assert user.find("RoleIDCode").get("csd-code") == "110153"


def test_dicom_xml_query_is_base64(stored) -> None:
    root = ET.fromstring(dicom_xml.render(stored(EVENTS["qido"])))
    query = root.findtext("ParticipantObjectIdentification/ParticipantObjectQuery")
    assert base64.b64decode(query) == b"PatientName=DOE*&limit=10"


def test_dicom_xml_shows_erased_after_shredding(stored) -> None:
    xml = dicom_xml.render(stored(EVENTS["wado"], shred=("pk-1",)))
    SCHEMA.validate(xml.decode())
    assert b"PID-001" not in xml and b"DOE^JANE" not in xml
    assert ERASED.encode() in xml


# --- FHIR / BALP --------------------------------------------------------------------

# event → (type code, restful/DCM subtype code, BALP profile suffix or None)
BALP_CASES = [
    ("qido", "rest", "search", "Query"),
    ("two-patients", "rest", "search", "PatientQuery"),
    ("wado", "rest", "read", "PatientRead"),
    ("metadata", "rest", "read", "PatientRead"),
    ("c-store", "rest", "create", "PatientCreate"),
    ("delete", "rest", "delete", "PatientDelete"),
    ("login", "110114", "110122", "Login"),
    ("logout", "110114", "110123", "Logout"),
    ("chain-alert", "110113", "DV001", None),
]


@pytest.mark.parametrize(("name", "type_code", "subtype", "profile"), BALP_CASES,
                         ids=[c[0] for c in BALP_CASES])
def test_fhir_auditevent_has_balp_elements(stored, name, type_code, subtype, profile) -> None:
    events = fhir.render(stored(EVENTS[name]))
    for ev in events:
        FhirAuditEvent.model_validate(ev)  # a structurally valid FHIR R4(B) AuditEvent
        assert ev["type"]["code"] == type_code
        assert subtype in [c["code"] for c in ev["subtype"]]
        assert ev["recorded"].endswith("Z") and ev["outcome"] in {"0", "4", "8", "12"}
        assert ev["source"]["observer"]["display"] == "test-node"
        assert any(a["requestor"] for a in ev["agent"])
        if profile:
            assert ev["meta"]["profile"][0].endswith(f"IHE.BasicAudit.{profile}")
        else:
            assert "meta" not in ev


def test_fhir_query_entity_keeps_raw_query_base64(stored) -> None:
    (ev,) = fhir.render(stored(EVENTS["qido"]))
    query = next(e for e in ev["entity"] if e["role"]["code"] == "24")
    assert base64.b64decode(query["query"]) == b"PatientName=DOE*&limit=10"


def test_fhir_one_auditevent_per_patient(stored) -> None:
    events = fhir.render(stored(EVENTS["two-patients"]))
    assert len(events) == 2
    patient_ids = [
        [e["what"]["identifier"]["value"] for e in ev["entity"] if e["role"]["code"] == "1"]
        for ev in events
    ]
    assert patient_ids == [["PID-001"], ["PID-002"]]
    assert all(any(e["role"]["code"] == "24" for e in ev["entity"]) for ev in events)
    assert len({ev["id"] for ev in events}) == 2


def test_fhir_agent_network_and_roles(stored) -> None:
    (ev,) = fhir.render(stored(EVENTS["wado"]))
    user = next(a for a in ev["agent"] if a["requestor"])
    assert user["who"]["identifier"]["value"] == "u:alice"
    assert user["network"] == {"address": "10.0.0.5", "type": "2"}
    assert user["type"]["coding"][0]["code"] == "110153"
    server = next(a for a in ev["agent"] if not a["requestor"])
    assert server["type"]["coding"][0]["code"] == "110150"
