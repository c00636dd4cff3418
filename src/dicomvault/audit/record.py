"""Canonical record bodies: ``AuditEvent`` ⇄ the JSON the chain hashes.

The body is a deterministic serialisation (sorted keys, no spaces, UTF-8)
of everything a PS3.15 A.5.1 AuditMessage carries.  PHI fields (Patient ID
and Name) are stored as AES-256-GCM ciphertext under the patient's DEK, so
the hash covers the ciphertext: shredding the DEK makes them unreadable
("[erased]") while the chain still verifies.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dicomvault.audit.events import AuditEvent, Code, ParticipantObject
from dicomvault.crypto.keyring import DataKey
from dicomvault.errors import InvalidInputError, TamperedError, UnavailableError

BODY_VERSION = 1
ERASED = "[erased]"
#: Instance counts are read from these detail/context keys for the bulk rule.
_COUNT_KEYS = ("NumberOfInstances", "instances")

DekLookup = Callable[[str], DataKey | None]


def _aad(field_name: str, patient_key_id: str) -> str:
    return f"dicomvault/audit/{field_name}/{patient_key_id}"


def _code(c: Code) -> list[str]:
    return [c.code, c.scheme, c.meaning]


def _iso(t: datetime) -> str:
    if t.tzinfo is None:
        raise InvalidInputError("audit event time must be timezone-aware")
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """Inverse of the ``...T...Z`` times in record bodies (``fromisoformat``: strptime is ~10x slower)."""
    if not text.endswith("Z"):
        raise ValueError(f"not a UTC record time: {text!r}")
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)


def _jsonable(value: object) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def _seal_object(obj: ParticipantObject, dek_lookup: DekLookup) -> dict[str, Any]:
    sealed: dict[str, str | None] = {"sensitive_id": None, "sensitive_name": None}
    if obj.sensitive_id is not None or obj.sensitive_name is not None:
        if not obj.patient_key_id:
            raise InvalidInputError("audit participant carries PHI without a patient key id")
        dek = dek_lookup(obj.patient_key_id)
        if dek is None:
            raise UnavailableError("patient key unavailable; audit record not written")
        for name in ("sensitive_id", "sensitive_name"):
            token = dek.seal_text(getattr(obj, name), _aad(name, obj.patient_key_id))
            sealed[name] = None if token is None else base64.b64encode(token).decode()
    return {
        "type_code": obj.type_code,
        "type_role": obj.type_role,
        "id_type": _code(obj.id_type.value),
        "object_id": obj.object_id,
        "patient_key_id": obj.patient_key_id,
        "query": None if obj.query is None else base64.b64encode(obj.query).decode(),
        "details": [[k, v] for k, v in obj.details],
        **sealed,
    }


def seal_event(event: AuditEvent, dek_lookup: DekLookup, node_id: str) -> dict[str, Any]:
    """Turn an event into a body dict without ``seq``/``recorded`` (filled in under the lock)."""
    return {
        "v": BODY_VERSION,
        "node": node_id,
        "time": _iso(event.time),
        "event": _code(event.event_id.value),
        "types": [_code(t.value) for t in event.event_types],
        "action": event.action.value,
        "outcome": int(event.outcome),
        "outcome_description": event.outcome_description,
        "door": event.door,
        "participants": [
            {
                "user_id": p.user_id,
                "is_requestor": p.is_requestor,
                "role": None if p.role is None else _code(p.role.value),
                "alternative_user_id": p.alternative_user_id,
                "user_name": p.user_name,
                "address": p.network_access_point,
                "dicomvault_role": p.dicomvault_role,
            }
            for p in event.participants
        ],
        "objects": [_seal_object(o, dek_lookup) for o in event.objects],
        "context": _jsonable(event.context),
    }


def canonical(body: dict[str, Any]) -> str:
    """The deterministic serialisation that the chain HMAC covers."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# ---------------------------------------------------------------------------
# Derived (searchable) fields — also used by verify to check the columns
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Derived:
    event_time: datetime
    recorded_at: datetime
    event_code: str
    action: str
    outcome: int
    user_id: str | None
    address: str | None
    door: str
    instance_count: int
    subjects: frozenset[tuple[str, str]]


def instance_count(body: dict[str, Any]) -> int:
    """Instances a record says were moved or read (its objects' NumberOfInstances, else its context)."""
    total = 0
    for obj in body["objects"]:
        for key, value in obj["details"]:
            if key == "NumberOfInstances" and str(value).isdigit():
                total += int(value)
    if total == 0:
        value = body.get("context", {}).get("instances")
        if isinstance(value, int) and not isinstance(value, bool):
            total = value
    return total


def derive(body: dict[str, Any]) -> Derived:
    """The column values a body implies (search keys, alert inputs)."""
    requestor = next((p for p in body["participants"] if p["is_requestor"]), None)
    subjects: set[tuple[str, str]] = set()
    for obj in body["objects"]:
        if obj["patient_key_id"]:
            subjects.add(("patient", obj["patient_key_id"][:128]))
        if obj["id_type"][0] == "110180" and obj["object_id"]:
            subjects.add(("study", obj["object_id"][:128]))
        if obj["type_role"] == 6 and obj["object_id"]:
            subjects.add(("user", obj["object_id"][:128]))
    return Derived(
        event_time=parse_time(body["time"]),
        recorded_at=parse_time(body["recorded"]),
        event_code=body["event"][0],
        action=body["action"],
        outcome=body["outcome"],
        user_id=None if requestor is None else requestor["user_id"][:256],
        address=None if requestor is None or not requestor["address"] else requestor["address"][:128],
        door=body["door"][:16],
        instance_count=instance_count(body),
        subjects=frozenset(subjects),
    )


# ---------------------------------------------------------------------------
# Reading back
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Participant:
    user_id: str
    is_requestor: bool
    role: Code | None
    alternative_user_id: str | None
    user_name: str | None
    address: str | None
    dicomvault_role: str | None


@dataclass(frozen=True)
class ObjectView:
    type_code: int
    type_role: int
    id_type: Code
    object_id: str
    patient_key_id: str | None
    #: Decrypted PHI, ``ERASED`` when the patient's DEK is gone, None when absent.
    patient_id: str | None
    patient_name: str | None
    query: bytes | None
    details: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class StoredRecord:
    """A record as read back from the chain, PHI decrypted where the key exists."""

    seq: int
    node: str
    time: datetime
    recorded: datetime
    event: Code
    types: tuple[Code, ...]
    action: str
    outcome: int
    outcome_description: str
    door: str
    participants: tuple[Participant, ...]
    objects: tuple[ObjectView, ...]
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def requestor(self) -> Participant | None:
        return next((p for p in self.participants if p.is_requestor), None)


def _open(token: str | None, name: str, key_id: str | None, dek: DataKey | None) -> str | None:
    if token is None:
        return None
    if dek is None or key_id is None:
        return ERASED
    try:
        return dek.open_text(base64.b64decode(token), _aad(name, key_id))
    except TamperedError:
        return ERASED


def decode(seq: int, body_text: str, dek_lookup: DekLookup) -> StoredRecord:
    """Parse a stored body and decrypt its PHI fields (PS3.15 A.5.1 content)."""
    body = json.loads(body_text)
    objects = []
    for o in body["objects"]:
        key_id = o["patient_key_id"]
        dek = dek_lookup(key_id) if key_id and (o["sensitive_id"] or o["sensitive_name"]) else None
        objects.append(ObjectView(
            type_code=o["type_code"], type_role=o["type_role"], id_type=Code(*o["id_type"]),
            object_id=o["object_id"], patient_key_id=key_id,
            patient_id=_open(o["sensitive_id"], "sensitive_id", key_id, dek),
            patient_name=_open(o["sensitive_name"], "sensitive_name", key_id, dek),
            query=None if o["query"] is None else base64.b64decode(o["query"]),
            details=tuple((k, v) for k, v in o["details"]),
        ))
    return StoredRecord(
        seq=seq, node=body["node"], time=parse_time(body["time"]),
        recorded=parse_time(body["recorded"]), event=Code(*body["event"]),
        types=tuple(Code(*t) for t in body["types"]), action=body["action"],
        outcome=body["outcome"], outcome_description=body["outcome_description"],
        door=body["door"],
        participants=tuple(
            Participant(
                user_id=p["user_id"], is_requestor=p["is_requestor"],
                role=None if p["role"] is None else Code(*p["role"]),
                alternative_user_id=p["alternative_user_id"], user_name=p["user_name"],
                address=p["address"], dicomvault_role=p["dicomvault_role"],
            )
            for p in body["participants"]
        ),
        objects=tuple(objects), context=body.get("context") or {},
    )
