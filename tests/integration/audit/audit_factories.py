"""Small event factories shared by the audit tests."""

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
    study_object,
    user_object,
)

STUDY = "1.2.826.0.1.3680043.8.498.1"


def access_event(i: int = 0, user: str = "u:alice", address: str = "10.0.0.5",
                 patient: str = "pk-1", instances: int = 1) -> AuditEvent:
    """A DICOM Instances Transferred record (PS3.15 A.5.3.4) for one patient."""
    return AuditEvent(
        event_id=EventId.INSTANCES_TRANSFERRED, action=Action.READ, outcome=Outcome.SUCCESS,
        participants=[requestor_participant(user, address), archive_participant("test-node")],
        objects=[
            patient_object(patient, f"PID-{i}", f"DOE^JANE{i}"),
            study_object(f"{STUDY}.{i}", ("1.2.840.10008.5.1.4.1.1.2",), instances),
        ],
        door="dicomweb",
    )


def login_event(ok: bool, user: str = "bob", address: str = "10.0.0.9") -> AuditEvent:
    """A User Authentication record (PS3.15 A.5.3.13)."""
    return AuditEvent(
        event_id=EventId.USER_AUTHENTICATION, action=Action.EXECUTE,
        outcome=Outcome.SUCCESS if ok else Outcome.MINOR_FAILURE,
        participants=[requestor_participant(user, address), archive_participant("test-node")],
        objects=[user_object(user)], event_types=[EventType.LOGIN], door="ui",
    )


def query_event(user: str = "u:alice") -> AuditEvent:
    """A Query record (PS3.15 A.5.3.10)."""
    return AuditEvent(
        event_id=EventId.QUERY, action=Action.EXECUTE, outcome=Outcome.SUCCESS,
        participants=[requestor_participant(user, "10.0.0.5"), archive_participant("test-node")],
        objects=[query_object("1.2.840.10008.5.1.4.1.2.2.1", b"PatientName=DOE*")],
        door="dimse",
    )
