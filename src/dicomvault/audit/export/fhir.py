"""FHIR R4 ``AuditEvent`` following IHE BALP (Basic Audit Log Patterns).

Mapping (BALP profiles named in ``meta.profile``):

* Query (110112)                       → type ``rest``, subtype ``search`` (Query / PatientQuery);
  the raw query goes base64-encoded into ``entity[query].query``.
* Instances accessed/transferred, begin transferring, export, import, study deleted
                                       → type ``rest``, subtype read/create/update/delete
  from the EventActionCode (Read/Create/Update/Delete, Patient* variants).
* User Authentication (110114)         → type 110114, subtype 110122 Login / 110123 Logout.
* anything else                        → type = the DICOM EventID, subtypes = EventTypeCodes.

The DICOM EventID is always kept as an extra ``subtype`` coding.  A record
that names several patients becomes one AuditEvent per patient (BALP).
"""

from __future__ import annotations

import base64
from typing import Any

from dicomvault.audit.events import Code
from dicomvault.audit.export.dicom_xml import network_type
from dicomvault.audit.record import ObjectView, Participant, StoredRecord

DCM = "http://dicom.nema.org/resources/ontology/DCM"
AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/"

_REST_EVENTS = {"110103", "110104", "110102", "110105", "110106", "110107"}
_ACTION_INTERACTION = {"C": "create", "R": "read", "U": "update", "D": "delete", "E": "read"}
_INTERACTION_PROFILE = {
    "create": "Create", "read": "Read", "update": "Update", "delete": "Delete", "search": "Query",
}


def _coding(code: Code) -> dict[str, str]:
    system = DCM if code.scheme == "DCM" else f"urn:dicomvault:codes:{code.scheme}"
    return {"system": system, "code": code.code, "display": code.meaning}


def _type_and_profile(
    record: StoredRecord, has_patient: bool
) -> tuple[dict[str, str], list[dict[str, str]], str | None]:
    event = _coding(record.event)
    if record.event.code == "110112":
        interaction = "search"
    elif record.event.code in _REST_EVENTS:
        interaction = _ACTION_INTERACTION.get(record.action, "read")
    else:
        interaction = ""
    if interaction:
        name = ("Patient" if has_patient else "") + _INTERACTION_PROFILE[interaction]
        rest = {"system": AUDIT_EVENT_TYPE, "code": "rest", "display": "Restful Operation"}
        subtype = [{"system": RESTFUL, "code": interaction}, event]
        return rest, subtype, f"{BALP}IHE.BasicAudit.{name}"
    subtype = [_coding(t) for t in record.types]
    profile: str | None = None
    if record.event.code == "110114":
        codes = {t.code for t in record.types}
        profile = "IHE.BasicAudit.Login" if "110122" in codes else (
            "IHE.BasicAudit.Logout" if "110123" in codes else None)
    return event, subtype, None if profile is None else f"{BALP}{profile}"


def _agent(p: Participant) -> dict[str, Any]:
    types: list[dict[str, Any]] = []
    if p.role is not None:
        types.append({"coding": [_coding(p.role)]})
    if p.is_requestor:
        # BALP user agent: the information recipient (v3 ParticipationType IRCP).
        types.append({"coding": [{"system": PARTICIPATION, "code": "IRCP",
                                  "display": "information recipient"}]})
    agent: dict[str, Any] = {
        "who": {"identifier": {"value": p.user_id}},
        "requestor": p.is_requestor,
    }
    if types:
        agent["type"] = types[0]
        if len(types) > 1:
            agent["role"] = types[1:]
    if p.user_name:
        agent["name"] = p.user_name
    if p.alternative_user_id:
        agent["altId"] = p.alternative_user_id
    if p.address:
        agent["network"] = {"address": p.address, "type": network_type(p.address)}
    return agent


def _entity(obj: ObjectView) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "type": {"system": ENTITY_TYPE, "code": str(obj.type_code)},
        "role": {"system": OBJECT_ROLE, "code": str(obj.type_role)},
    }
    if obj.type_code == 1 and obj.type_role == 1:
        entity["what"] = {"identifier": {"value": obj.patient_id or obj.object_id},
                          "display": obj.patient_name or None}
        if entity["what"]["display"] is None:
            del entity["what"]["display"]
    elif obj.id_type.code in ("110180", "110181"):
        entity["what"] = {"identifier": {"system": "urn:dicom:uid",
                                         "value": f"urn:oid:{obj.object_id}"}}
    else:
        entity["what"] = {"identifier": {"value": obj.object_id}}
    if obj.query is not None:
        entity["query"] = base64.b64encode(obj.query).decode()
    if obj.details:
        entity["detail"] = [{"type": k, "valueString": v} for k, v in obj.details]
    return entity


def _is_patient(obj: ObjectView) -> bool:
    return obj.type_code == 1 and obj.type_role == 1


def render(record: StoredRecord) -> list[dict[str, Any]]:
    """FHIR R4 AuditEvent(s) for one record: one per patient named (IHE BALP)."""
    patients = [o for o in record.objects if _is_patient(o)]
    others = [o for o in record.objects if not _is_patient(o)]
    groups = [[p] for p in patients] or [[]]
    out = []
    for index, group in enumerate(groups):
        type_, subtype, profile = _type_and_profile(record, bool(group))
        event: dict[str, Any] = {
            "resourceType": "AuditEvent",
            "id": f"{record.node}-{record.seq}" + (f"-{index + 1}" if len(groups) > 1 else ""),
            "type": type_,
            "subtype": subtype,
            "action": record.action,
            "period": {"start": _iso(record), "end": _iso(record)},
            "recorded": record.recorded.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "outcome": str(record.outcome),
            "agent": [_agent(p) for p in record.participants],
            "source": {
                "observer": {"display": record.node, "identifier": {"value": record.node}},
                "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
            },
            "entity": [_entity(o) for o in group + others],
        }
        if profile:
            event["meta"] = {"profile": [profile]}
        if record.outcome_description:
            event["outcomeDesc"] = record.outcome_description
        if record.context.get("break_glass"):
            event["purposeOfEvent"] = [{"coding": [{"system": ACT_REASON, "code": "ETREAT",
                                                    "display": "Emergency Treatment"}]}]
        out.append(event)
    return out


def _iso(record: StoredRecord) -> str:
    return record.time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
