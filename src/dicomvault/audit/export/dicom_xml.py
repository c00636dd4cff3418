"""DICOM audit messages (PS3.15 A.5.1, the RFC 3881 derived schema).

``render`` turns a stored record into one ``AuditMessage`` document on a
single line (syslog-friendly).  Patient ID/Name are the decrypted values, or
"[erased]" once the patient's DEK is shredded.  ``SCHEMA_PATH`` is the
shipped schema the tests validate against.
"""

from __future__ import annotations

import base64
import ipaddress
import xml.etree.ElementTree as ET  # noqa: S405 - generation only, never parsing input
from pathlib import Path

from dicomvault.audit.events import Code
from dicomvault.audit.record import ObjectView, StoredRecord

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema" / "dicom-audit-message.xsd"
#: PS3.15 A.5.1.2.1 Audit Source Type Code 4: application server process.
_SOURCE_TYPE_APPLICATION_SERVER = "4"


def _coded(parent: ET.Element, tag: str, code: Code) -> ET.Element:
    return ET.SubElement(parent, tag, {
        "csd-code": code.code, "codeSystemName": code.scheme, "originalText": code.meaning,
    })


def _iso(record: StoredRecord) -> str:
    return record.time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def network_type(address: str) -> str:
    """NetworkAccessPointTypeCode: 2 for an IP address, 1 for a machine name (A.5.1)."""
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return "1"
    return "2"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode()


def _object(parent: ET.Element, obj: ObjectView) -> None:
    is_patient = obj.type_role == 1 and obj.type_code == 1
    object_id = (obj.patient_id or obj.object_id) if is_patient else obj.object_id
    el = ET.SubElement(parent, "ParticipantObjectIdentification", {
        "ParticipantObjectID": object_id,
        "ParticipantObjectTypeCode": str(obj.type_code),
        "ParticipantObjectTypeCodeRole": str(obj.type_role),
    })
    _coded(el, "ParticipantObjectIDTypeCode", obj.id_type)
    if obj.query is not None:
        ET.SubElement(el, "ParticipantObjectQuery").text = base64.b64encode(obj.query).decode()
    else:
        name = (obj.patient_name or "") if is_patient else obj.object_id
        ET.SubElement(el, "ParticipantObjectName").text = name
    sop_classes = [v for k, v in obj.details if k == "SOPClassUID"]
    counts = [v for k, v in obj.details if k == "NumberOfInstances"]
    for key, value in obj.details:
        ET.SubElement(el, "ParticipantObjectDetail", {"type": key, "value": _b64(value)})
    if len(sop_classes) == 1:
        desc = ET.SubElement(el, "ParticipantObjectDescription")
        ET.SubElement(desc, "SOPClass", {
            "UID": sop_classes[0], "NumberOfInstances": counts[0] if counts else "0",
        })


def to_element(record: StoredRecord, *, site_id: str | None = None) -> ET.Element:
    """Build the ``AuditMessage`` element (PS3.15 A.5.1.1)."""
    root = ET.Element("AuditMessage")
    ev = ET.SubElement(root, "EventIdentification", {
        "EventActionCode": record.action,
        "EventDateTime": _iso(record),
        "EventOutcomeIndicator": str(record.outcome),
    })
    _coded(ev, "EventID", record.event)
    for t in record.types:
        _coded(ev, "EventTypeCode", t)
    if record.outcome_description:
        ET.SubElement(ev, "EventOutcomeDescription").text = record.outcome_description
    for p in record.participants:
        attrs = {"UserID": p.user_id, "UserIsRequestor": "true" if p.is_requestor else "false"}
        if p.alternative_user_id:
            attrs["AlternativeUserID"] = p.alternative_user_id
        if p.user_name:
            attrs["UserName"] = p.user_name
        if p.address:
            attrs["NetworkAccessPointID"] = p.address
            attrs["NetworkAccessPointTypeCode"] = network_type(p.address)
        ap = ET.SubElement(root, "ActiveParticipant", attrs)
        if p.role is not None:
            _coded(ap, "RoleIDCode", p.role)
    src_attrs = {"AuditSourceID": record.node}
    if site_id:
        src_attrs["AuditEnterpriseSiteID"] = site_id
    src = ET.SubElement(root, "AuditSourceIdentification", src_attrs)
    ET.SubElement(src, "AuditSourceTypeCode", {"csd-code": _SOURCE_TYPE_APPLICATION_SERVER})
    for obj in record.objects:
        _object(root, obj)
    return root


def render(record: StoredRecord, *, site_id: str | None = None, declaration: bool = True) -> bytes:
    """The record as a UTF-8 DICOM audit message on one line (PS3.15 A.5.1)."""
    body = ET.tostring(to_element(record, site_id=site_id), encoding="utf-8",
                       xml_declaration=False)
    return (b'<?xml version="1.0" encoding="UTF-8"?>' if declaration else b"") + body
