"""One event of each PS3.15 A.5.3 kind the doors emit, for the export tests."""

from __future__ import annotations

from dicomvault.audit.events import (
    Action,
    AuditEvent,
    EventId,
    EventType,
    Outcome,
    archive_participant,
    patient_object,
    query_object,
    requestor_participant,
    security_alert,
    security_resource_object,
    study_object,
    user_object,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
STUDY = "1.2.826.0.1.3680043.8.498.77"
FIND = "1.2.840.10008.5.1.4.1.2.2.1"
USER = requestor_participant("u:alice", "10.0.0.5", user_name="Alice Smith",
                             dicomvault_role="radiologist")
AE = requestor_participant("ae:CT01", "ct01.hospital.example")
ARCHIVE = archive_participant("test-node", "10.0.0.1")
SYSTEM = requestor_participant("test-node", role=None)


def _ev(event_id, action, objects, *, who=USER, outcome=Outcome.SUCCESS, types=(), door="dicomweb"):
    return AuditEvent(event_id=event_id, action=action, outcome=outcome,
                      participants=[who, ARCHIVE], objects=objects, event_types=list(types),
                      door=door)


PATIENT = patient_object("pk-1", "PID-001", "DOE^JANE")
EVENTS: dict[str, AuditEvent] = {
    "c-store": _ev(EventId.INSTANCES_TRANSFERRED, Action.CREATE,
                   [PATIENT, study_object(STUDY, (CT,), 3)], who=AE, door="dimse"),
    "wado": _ev(EventId.INSTANCES_TRANSFERRED, Action.READ, [PATIENT, study_object(STUDY, (CT, MR), 9)]),
    "begin-transfer": _ev(EventId.BEGIN_TRANSFERRING, Action.EXECUTE, [PATIENT, study_object(STUDY)]),
    "metadata": _ev(EventId.INSTANCES_ACCESSED, Action.READ, [PATIENT, study_object(STUDY)]),
    "qido": _ev(EventId.QUERY, Action.EXECUTE, [query_object(FIND, b"PatientName=DOE*&limit=10")]),
    "login": _ev(EventId.USER_AUTHENTICATION, Action.EXECUTE, [user_object("alice")],
                 types=[EventType.LOGIN], door="ui"),
    "login-failed": _ev(EventId.USER_AUTHENTICATION, Action.EXECUTE, [user_object("alice")],
                        outcome=Outcome.MINOR_FAILURE, types=[EventType.LOGIN], door="ui"),
    "logout": _ev(EventId.USER_AUTHENTICATION, Action.EXECUTE, [], types=[EventType.LOGOUT]),
    "user-change": _ev(EventId.SECURITY_ALERT, Action.EXECUTE, [user_object("bob")],
                       types=[EventType.USER_SECURITY_ATTRIBUTES_CHANGED], door="rest"),
    "export": _ev(EventId.EXPORT, Action.READ, [PATIENT, study_object(STUDY, (CT,), 2)]),
    "delete": _ev(EventId.STUDY_DELETED, Action.DELETE, [PATIENT, study_object(STUDY, (CT,), 2)]),
    "audit-log-used": _ev(EventId.AUDIT_LOG_USED, Action.READ, [security_resource_object("audit-chain")]),
    "app-start": _ev(EventId.APPLICATION_ACTIVITY, Action.EXECUTE, [],
                     who=requestor_participant("system:serve"), types=[EventType.APPLICATION_START]),
    "chain-alert": security_alert(EventType.AUDIT_CHAIN_FAILURE, [SYSTEM],
                                  description="audit chain verification failed at record 4",
                                  objects=[security_resource_object("audit-chain")]),
    "two-patients": _ev(EventId.QUERY, Action.EXECUTE, [
        query_object(FIND, b"StudyDate=2024"), PATIENT,
        patient_object("pk-2", "PID-002", "ROE^RICHARD")]),
}
