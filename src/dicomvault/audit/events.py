"""Audit event model: DICOM PS3.15 A.5 audit messages as plain data.

Every door builds ``AuditEvent`` objects with the helpers below and hands them
to the audit trail (``audit.chain``).  Values that identify a patient (Patient
ID, Patient Name) go into ``ParticipantObject.sensitive`` fields, which the
chain encrypts under that patient's DEK before storing (so crypto-shredding
the patient erases them while the chain still verifies).

Codes: PS3.16 CID 400 (audit event ID), CID 401 (event type), CID 402
(active participant role), PS3.15 A.5.2 (participant object ID types).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum, IntEnum

from dicomvault.index.base import utcnow


@dataclass(frozen=True)
class Code:
    """A coded value (code, scheme, meaning)."""

    code: str
    scheme: str
    meaning: str


class EventId(Enum):
    """PS3.15 A.5.3 audit message event IDs (DCM codes, PS3.16 CID 400)."""

    APPLICATION_ACTIVITY = Code("110100", "DCM", "Application Activity")
    AUDIT_LOG_USED = Code("110101", "DCM", "Audit Log Used")
    BEGIN_TRANSFERRING = Code("110102", "DCM", "Begin Transferring DICOM Instances")
    INSTANCES_ACCESSED = Code("110103", "DCM", "DICOM Instances Accessed")
    INSTANCES_TRANSFERRED = Code("110104", "DCM", "DICOM Instances Transferred")
    STUDY_DELETED = Code("110105", "DCM", "DICOM Study Deleted")
    EXPORT = Code("110106", "DCM", "Export")
    IMPORT = Code("110107", "DCM", "Import")
    NETWORK_ENTRY = Code("110108", "DCM", "Network Entry")
    ORDER_RECORD = Code("110109", "DCM", "Order Record")
    PATIENT_RECORD = Code("110110", "DCM", "Patient Record")
    PROCEDURE_RECORD = Code("110111", "DCM", "Procedure Record")
    QUERY = Code("110112", "DCM", "Query")
    SECURITY_ALERT = Code("110113", "DCM", "Security Alert")
    USER_AUTHENTICATION = Code("110114", "DCM", "User Authentication")


class EventType(Enum):
    """PS3.16 CID 401 audit event type codes (subset used here)."""

    APPLICATION_START = Code("110120", "DCM", "Application Start")
    APPLICATION_STOP = Code("110121", "DCM", "Application Stop")
    LOGIN = Code("110122", "DCM", "Login")
    LOGOUT = Code("110123", "DCM", "Logout")
    NODE_AUTHENTICATION = Code("110126", "DCM", "Node Authentication")
    EMERGENCY_OVERRIDE_STARTED = Code("110127", "DCM", "Emergency Override Started")
    NETWORK_CONFIGURATION = Code("110128", "DCM", "Network Configuration")
    SECURITY_CONFIGURATION = Code("110129", "DCM", "Security Configuration")
    SOFTWARE_CONFIGURATION = Code("110131", "DCM", "Software Configuration")
    USE_OF_RESTRICTED_FUNCTION = Code("110132", "DCM", "Use of Restricted Function")
    AUDIT_RECORDING_STOPPED = Code("110133", "DCM", "Audit Recording Stopped")
    AUDIT_RECORDING_STARTED = Code("110134", "DCM", "Audit Recording Started")
    OBJECT_SECURITY_ATTRIBUTES_CHANGED = Code("110135", "DCM", "Object Security Attributes Changed")
    SECURITY_ROLES_CHANGED = Code("110136", "DCM", "Security Roles Changed")
    USER_SECURITY_ATTRIBUTES_CHANGED = Code("110137", "DCM", "User security Attributes Changed")
    EMERGENCY_OVERRIDE_STOPPED = Code("110138", "DCM", "Emergency Override Stopped")
    # Local codes (private scheme 99DV) for Security Alert causes PS3.16 CID 401 lacks.
    AUDIT_CHAIN_FAILURE = Code("DV001", "99DV", "Audit Chain Integrity Failure")
    OBJECT_INTEGRITY_FAILURE = Code("DV002", "99DV", "Stored Object Integrity Failure")
    REPEATED_LOGIN_FAILURES = Code("DV003", "99DV", "Repeated Authentication Failures")
    BULK_RETRIEVAL = Code("DV004", "99DV", "Bulk Retrieval Threshold Exceeded")
    OUTSIDE_WORKING_HOURS = Code("DV005", "99DV", "Access Outside Working Hours")
    TLS_HANDSHAKE_FAILURE = Code("DV006", "99DV", "TLS Handshake Failure From Known Peer")


class RoleId(Enum):
    """PS3.16 CID 402 active participant role IDs."""

    APPLICATION = Code("110150", "DCM", "Application")
    APPLICATION_LAUNCHER = Code("110151", "DCM", "Application Launcher")
    DESTINATION = Code("110152", "DCM", "Destination Role ID")
    SOURCE = Code("110153", "DCM", "Source Role ID")


class Outcome(IntEnum):
    """EventOutcomeIndicator (PS3.15 A.5.1)."""

    SUCCESS = 0
    MINOR_FAILURE = 4
    SERIOUS_FAILURE = 8
    MAJOR_FAILURE = 12


class Action(str, Enum):  # noqa: UP042 - canonical audit bytes use the str mix-in
    """EventActionCode (PS3.15 A.5.1)."""

    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"


class ObjectIdType(Enum):
    """ParticipantObjectIDTypeCode values (RFC 3881 and DCM)."""

    PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
    USER_IDENTIFIER = Code("11", "RFC-3881", "User Identifier")
    URI = Code("12", "RFC-3881", "URI")
    STUDY_INSTANCE_UID = Code("110180", "DCM", "Study Instance UID")
    SOP_CLASS_UID = Code("110181", "DCM", "SOP Class UID")
    NODE_ID = Code("110182", "DCM", "Node ID")
    SECURITY_RESOURCE = Code("113877", "DCM", "Device Name")


@dataclass(frozen=True)
class ActiveParticipant:
    """Who took part: the requesting user/AE, the archive itself, a peer."""

    user_id: str
    is_requestor: bool
    role: RoleId | None = None
    alternative_user_id: str | None = None
    user_name: str | None = None
    #: IP address or host name of the participant's network access point.
    network_access_point: str | None = None
    #: The dicomvault role (admin, radiologist...) of a user, for reports.
    dicomvault_role: str | None = None


@dataclass(frozen=True)
class ParticipantObject:
    """What was touched: a patient, a study, a query, a user account.

    ``object_id`` is stored in clear (UIDs, usernames, query hashes);
    ``sensitive_id``/``sensitive_name`` hold PHI (Patient ID, Patient Name)
    and are encrypted under the patient DEK named by ``patient_key_id``.
    """

    type_code: int  # 1 person, 2 system object, 3 organization, 4 other
    type_role: int  # 1 patient, 3 report, 6 user, 13 security resource, 24 query
    id_type: ObjectIdType
    object_id: str = ""
    sensitive_id: str | None = None
    sensitive_name: str | None = None
    patient_key_id: str | None = None
    query: bytes | None = None
    #: (type, value) pairs, e.g. ("SOPClassUID", "1.2.840...") or ("NumberOfInstances", "3").
    details: tuple[tuple[str, str], ...] = ()


@dataclass
class AuditEvent:
    """One audit record before it is chained (PS3.15 A.5.1 AuditMessage)."""

    event_id: EventId
    action: Action
    outcome: Outcome
    participants: list[ActiveParticipant]
    objects: list[ParticipantObject] = field(default_factory=list)
    event_types: list[EventType] = field(default_factory=list)
    outcome_description: str = ""
    time: datetime = field(default_factory=utcnow)
    #: Which door produced it: dimse, dicomweb, rest, ui, cli, job.
    door: str = ""
    #: Free-form non-PHI context for alerting (e.g. {"instances": 3}).
    context: dict[str, object] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# Builders for the participant objects every door uses
# ---------------------------------------------------------------------------

def patient_object(patient_key_id: str, patient_id: str | None,
                   patient_name: str | None) -> ParticipantObject:
    """Patient participant (type 1 person, role 1 patient, ID type 2)."""
    return ParticipantObject(
        type_code=1,
        type_role=1,
        id_type=ObjectIdType.PATIENT_NUMBER,
        object_id=patient_key_id,
        sensitive_id=patient_id,
        sensitive_name=patient_name,
        patient_key_id=patient_key_id,
    )


def study_object(
    study_uid: str, sop_class_uids: tuple[str, ...] = (), instance_count: int | None = None
) -> ParticipantObject:
    """Study participant (type 2, role 3 report, ID type 110180), PS3.15 A.5.3."""
    details: list[tuple[str, str]] = [("SOPClassUID", uid) for uid in sop_class_uids]
    if instance_count is not None:
        details.append(("NumberOfInstances", str(instance_count)))
    return ParticipantObject(
        type_code=2, type_role=3, id_type=ObjectIdType.STUDY_INSTANCE_UID,
        object_id=study_uid, details=tuple(details),
    )


def query_object(sop_class_uid: str, query: bytes) -> ParticipantObject:
    """Query participant (type 2, role 24 query, ID type 110181 SOP Class UID)."""
    return ParticipantObject(
        type_code=2, type_role=24, id_type=ObjectIdType.SOP_CLASS_UID,
        object_id=sop_class_uid, query=query,
    )


def user_object(username: str) -> ParticipantObject:
    """A user account as the object of a change (type 1, role 6 user, ID type 11)."""
    return ParticipantObject(type_code=1, type_role=6, id_type=ObjectIdType.USER_IDENTIFIER,
                             object_id=username)


# ---------------------------------------------------------------------------
# Builders for participants and whole events (added for the audit trail)
# ---------------------------------------------------------------------------

def archive_participant(node_id: str, address: str | None = None) -> ActiveParticipant:
    """The archive itself as a non-requesting participant (PS3.15 A.5.3 "Application")."""
    return ActiveParticipant(
        user_id=node_id, is_requestor=False, role=RoleId.APPLICATION, network_access_point=address
    )


def requestor_participant(
    user_id: str,
    address: str | None = None,
    *,
    role: RoleId | None = RoleId.SOURCE,
    user_name: str | None = None,
    dicomvault_role: str | None = None,
) -> ActiveParticipant:
    """The requesting user or AE (UserIsRequestor=true), PS3.15 A.5.2.2."""
    return ActiveParticipant(
        user_id=user_id, is_requestor=True, role=role, user_name=user_name,
        network_access_point=address, dicomvault_role=dicomvault_role,
    )


def security_alert(
    cause: EventType,
    participants: list[ActiveParticipant],
    *,
    description: str = "",
    outcome: Outcome = Outcome.MINOR_FAILURE,
    objects: list[ParticipantObject] | None = None,
    door: str = "job",
    context: dict[str, object] | None = None,
) -> AuditEvent:
    """A Security Alert message (PS3.15 A.5.3.11, EventID 110113, action E)."""
    return AuditEvent(
        event_id=EventId.SECURITY_ALERT, action=Action.EXECUTE, outcome=outcome,
        participants=participants, objects=list(objects or []), event_types=[cause],
        outcome_description=description, door=door, context=dict(context or {}),
    )


def security_resource_object(name: str) -> ParticipantObject:
    """A security resource (e.g. the audit chain) as alert object (type 2, role 13)."""
    return ParticipantObject(
        type_code=2, type_role=13, id_type=ObjectIdType.SECURITY_RESOURCE, object_id=name
    )


# ---------------------------------------------------------------------------
# Identity events (PS3.15 A.5.3.11 User Authentication, A.5.3.10 Security Alert)
# ---------------------------------------------------------------------------

def user_authentication_event(
    user_id: str,
    *,
    event_type: EventType,
    outcome: Outcome,
    address: str | None = None,
    user_name: str | None = None,
    role: str | None = None,
    door: str = "",
    description: str = "",
    context: dict[str, object] | None = None,
) -> AuditEvent:
    """User Authentication (110114) with event type Login (110122) or Logout (110123).

    ``user_id`` is the account (or the attempted username for an unknown account);
    failures carry an outcome other than SUCCESS and a non-PHI description.
    """
    return AuditEvent(
        event_id=EventId.USER_AUTHENTICATION,
        action=Action.EXECUTE,
        outcome=outcome,
        participants=[
            ActiveParticipant(
                user_id=user_id, is_requestor=True, user_name=user_name,
                network_access_point=address, dicomvault_role=role,
            )
        ],
        event_types=[event_type],
        outcome_description=description,
        door=door,
        context=dict(context or {}),
    )


def security_alert_event(
    actor_id: str,
    *,
    event_type: EventType,
    outcome: Outcome = Outcome.SUCCESS,
    address: str | None = None,
    actor_role: str | None = None,
    objects: list[ParticipantObject] | None = None,
    door: str = "",
    description: str = "",
    context: dict[str, object] | None = None,
) -> AuditEvent:
    """Security Alert (110113), e.g. Security Roles Changed (110136), Emergency Override
    Started (110127), User Security Attributes Changed (110137)."""
    return AuditEvent(
        event_id=EventId.SECURITY_ALERT,
        action=Action.EXECUTE,
        outcome=outcome,
        participants=[
            ActiveParticipant(
                user_id=actor_id, is_requestor=True, network_access_point=address,
                dicomvault_role=actor_role,
            )
        ],
        objects=list(objects or []),
        event_types=[event_type],
        outcome_description=description,
        door=door,
        context=dict(context or {}),
    )


def node_object(ae_title: str) -> ParticipantObject:
    """A DICOM node (AE title) as the object of a change (type 2, role 13, ID type 110182)."""
    return ParticipantObject(type_code=2, type_role=13, id_type=ObjectIdType.NODE_ID, object_id=ae_title)


def tls_handshake_failure(
    address: str, node_id: str, *, ae_title: str | None = None, door: str = "dimse",
    detail: str = "TLS handshake failed",
) -> AuditEvent:
    """A failed TLS handshake (Security Alert, Node Authentication 110126, outcome 4).

    Doors audit every failed handshake; the alert rules escalate the ones that
    come from a configured (known) peer.  ``detail`` must not contain PHI.
    """
    return security_alert(
        EventType.NODE_AUTHENTICATION,
        [requestor_participant(ae_title or f"unknown@{address}", address),
         archive_participant(node_id)],
        description=detail, door=door, context={"tls_failure": True},
    )
