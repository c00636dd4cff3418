"""Audit access (issue 4 §4): search and accounting of disclosures, for auditors only.

Both operations pass the policy (``audit:read``) and are themselves audited
as *Audit Log Used* (PS3.15 A.5.3.2, EventID 110101); a refusal is audited
too.  Patients are filtered by ``patient_key_id`` (the non-identifying key
id), because Patient IDs are stored only as ciphertext.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from dicomvault.access.permissions import AUDIT_READ
from dicomvault.access.policy import Policy, Resource
from dicomvault.access.principal import Principal
from dicomvault.audit.chain import AuditTrail
from dicomvault.audit.events import (
    Action,
    ActiveParticipant,
    AuditEvent,
    EventId,
    ObjectIdType,
    Outcome,
    ParticipantObject,
    RoleId,
)
from dicomvault.audit.models import AuditRecord, AuditSubject
from dicomvault.audit.record import StoredRecord
from dicomvault.errors import ForbiddenError, InvalidInputError
from dicomvault.index.db import unit_of_work

MAX_LIMIT = 1000
_EVENT_NAMES = {e.name.lower().replace("_", "-"): e.value.code for e in EventId}
#: Records that disclose a patient's data: (event code, actions); C-STORE imports are not.
_DISCLOSING = {
    "110102": {"R", "E", "C", "U", "D"},
    "110103": {"R", "U", "D", "E"},
    "110104": {"R", "E"},
    "110105": {"D"},
    "110106": {"R", "E"},
    "110112": {"E", "R"},
    "110113": {"E"},
}


def event_code(name_or_code: str) -> str:
    """Accept "110112" or a name like "query" / "instances-transferred"."""
    value = name_or_code.strip().lower()
    if value in _EVENT_NAMES:
        return _EVENT_NAMES[value]
    if value.isdigit():
        return value
    raise InvalidInputError(f"unknown audit event type; use one of {sorted(_EVENT_NAMES)}")


@dataclass(frozen=True)
class AuditFilter:
    """Search filters; all optional, combined with AND."""

    since: datetime | None = None
    until: datetime | None = None
    user_id: str | None = None
    patient_key_id: str | None = None
    study_uid: str | None = None
    event: str | None = None
    outcome: int | None = None
    after_seq: int = 0
    limit: int = 100

    def describe(self) -> bytes:
        doc = {k: (v.isoformat() if isinstance(v, datetime) else v)
               for k, v in asdict(self).items() if v not in (None, 0) or k == "outcome"}
        return json.dumps(doc, sort_keys=True).encode()


@dataclass(frozen=True)
class Disclosure:
    """One line of the accounting of disclosures: who, when, what, how, why."""

    seq: int
    time: datetime
    event: str
    action: str
    outcome: int
    user_id: str
    user_role: str | None
    address: str | None
    door: str
    studies: tuple[str, ...]
    destination: str | None
    reason: str


class AuditQueryService:
    """Search the chain and report disclosures; every call is authorised and audited."""

    def __init__(self, trail: AuditTrail, policy: Policy | None = None) -> None:
        self._trail = trail
        self._policy = policy or Policy()

    # -- gate ------------------------------------------------------------------

    def record_use(self, principal: Principal, what: str, detail: bytes = b"",
                   outcome: Outcome = Outcome.SUCCESS, description: str = "") -> None:
        """Audit a use of the log that is not a search (e.g. ``audit verify``), PS3.15 A.5.3.2."""
        self._log_used(principal, what, detail, outcome, description)

    def _log_used(self, principal: Principal, what: str, detail: bytes, outcome: Outcome,
                  description: str = "") -> None:
        """Audit Log Used (PS3.15 A.5.3.2): the audit log as a security resource, by URI."""
        log_object = ParticipantObject(
            type_code=2, type_role=13, id_type=ObjectIdType.URI, object_id="dicomvault:audit-log",
            query=detail, details=(("Operation", what),),
        )
        self._trail.append([AuditEvent(
            event_id=EventId.AUDIT_LOG_USED, action=Action.READ, outcome=outcome,
            participants=[ActiveParticipant(
                user_id=principal.id, is_requestor=True, user_name=principal.name,
                network_access_point=principal.address, role=RoleId.DESTINATION,
                dicomvault_role=",".join(sorted(principal.roles)),
            )],
            objects=[log_object], outcome_description=description, door=principal.door,
        )])

    def _authorize(self, principal: Principal, what: str, detail: bytes) -> None:
        decision = self._policy.authorize(principal, AUDIT_READ, Resource("audit"))
        if not decision.allowed:
            self._log_used(principal, what, detail, Outcome.MINOR_FAILURE, "access denied")
            raise ForbiddenError("reading the audit log needs the auditor role")

    # -- search ----------------------------------------------------------------

    def _statement(self, f: AuditFilter) -> Select[Any]:
        q = select(AuditRecord).where(AuditRecord.seq > f.after_seq)
        if f.since is not None:
            q = q.where(AuditRecord.event_time >= f.since)
        if f.until is not None:
            q = q.where(AuditRecord.event_time < f.until)
        if f.user_id:
            by_object = select(AuditSubject.seq).where(
                AuditSubject.kind == "user", AuditSubject.value == f.user_id)
            q = q.where((AuditRecord.user_id == f.user_id) | AuditRecord.seq.in_(by_object))
        if f.event:
            q = q.where(AuditRecord.event_code == event_code(f.event))
        if f.outcome is not None:
            q = q.where(AuditRecord.outcome == f.outcome)
        for kind, value in (("patient", f.patient_key_id), ("study", f.study_uid)):
            if value:
                q = q.where(AuditRecord.seq.in_(select(AuditSubject.seq).where(
                    AuditSubject.kind == kind, AuditSubject.value == value)))
        return q.order_by(AuditRecord.seq).limit(max(1, min(f.limit, MAX_LIMIT)))

    def search(self, principal: Principal, f: AuditFilter) -> list[StoredRecord]:
        """Records matching ``f`` in chain order (keyset paging with ``after_seq``)."""
        detail = f.describe()
        self._authorize(principal, "search", detail)
        self._trail.flush()
        with unit_of_work(self._trail.session_factory) as s:
            rows = self._rows(s, f)
        self._log_used(principal, "search", detail, Outcome.SUCCESS)
        return rows

    def _rows(self, s: Session, f: AuditFilter) -> list[StoredRecord]:
        return [self._trail.decode(r) for r in s.scalars(self._statement(f))]

    # -- accounting of disclosures -------------------------------------------------

    def disclosures(
        self, principal: Principal, patient_key_id: str, *, since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Disclosure]:
        """Who accessed or received one patient's data, when, how and why (HIPAA 164.528)."""
        if not patient_key_id:
            raise InvalidInputError("a patient key id is required")
        f = AuditFilter(since=since, until=until, patient_key_id=patient_key_id, limit=MAX_LIMIT)
        detail = json.dumps({"disclosures": patient_key_id}).encode()
        self._authorize(principal, "disclosures", detail)
        self._trail.flush()
        out: list[Disclosure] = []
        with unit_of_work(self._trail.session_factory) as s:
            while True:
                batch = self._rows(s, f)
                out.extend(d for r in batch if (d := _disclosure(r)) is not None)
                if len(batch) < f.limit:
                    break
                f = AuditFilter(since=since, until=until, patient_key_id=patient_key_id,
                                after_seq=batch[-1].seq, limit=MAX_LIMIT)
        self._log_used(principal, "disclosures", detail, Outcome.SUCCESS)
        return out


def _disclosure(r: StoredRecord) -> Disclosure | None:
    if r.action not in _DISCLOSING.get(r.event.code, set()):
        return None
    who = r.requestor
    if who is None:
        return None
    dest = next((p.user_id for p in r.participants
                 if p.role is not None and p.role.code == "110152" and not p.is_requestor), None)
    ctx = r.context
    reason = str(ctx.get("reason") or ctx.get("purpose") or "")
    if ctx.get("break_glass"):
        reason = ("break-the-glass " + reason).strip()
    return Disclosure(
        seq=r.seq, time=r.time, event=r.event.meaning, action=r.action, outcome=r.outcome,
        user_id=who.user_id, user_role=who.dicomvault_role, address=who.address, door=r.door,
        studies=tuple(o.object_id for o in r.objects if o.id_type.code == "110180"),
        destination=dest, reason=reason,
    )


def disclosures_as_rows(items: Sequence[Disclosure]) -> list[dict[str, object]]:
    """Plain dicts for JSON/CSV reports."""
    return [dict(asdict(d), time=d.time.isoformat()) for d in items]
