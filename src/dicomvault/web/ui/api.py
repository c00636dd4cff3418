"""JSON endpoints our pages need beyond the auth and admin APIs (``/ui/api/...``).

Each one authenticates through ``deps.CurrentPrincipal`` (session cookie + CSRF
on unsafe methods) and calls services, which authorise and audit; nothing here
reads the database.  Patient identifiers travel in request bodies, never in
URLs (no PHI in URLs or logs).
"""

from __future__ import annotations

import base64
import dataclasses
from datetime import datetime
from enum import Enum
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from dicomvault.access.permissions import AUDIT_READ, Scope, scope_for
from dicomvault.audit.query import MAX_LIMIT, AuditFilter, AuditQueryService, disclosures_as_rows
from dicomvault.audit.record import StoredRecord
from dicomvault.errors import ForbiddenError, InvalidInputError, NotFoundError
from dicomvault.web.deps import CurrentPrincipal, ServicesDep

router = APIRouter(prefix="/ui/api", include_in_schema=False)


@router.get("/session")
def session_info(principal: CurrentPrincipal, services: ServicesDep) -> dict[str, Any]:
    """Who is signed in and the idle timeout (also refreshes the session: "stay signed in")."""
    return {
        "user": principal.id, "name": principal.name, "roles": sorted(principal.roles),
        "idle_seconds": services.settings.security.session_idle_minutes * 60,
        "break_glass": [{"study_uid": uid, "until": until.isoformat()}
                        for uid, until in principal.break_glass],
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(value).decode()
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return value


def _summary(r: StoredRecord) -> dict[str, Any]:
    who = r.requestor
    alert = r.event.code == "110113"
    return {
        "seq": r.seq, "time": r.time.isoformat(), "event": r.event.meaning, "event_code": r.event.code,
        "types": [t.meaning for t in r.types], "action": r.action, "outcome": r.outcome,
        "user": who.user_id if who else None, "user_name": who.user_name if who else None,
        "address": who.address if who else None, "door": r.door,
        "description": r.outcome_description, "security_alert": alert,
        "break_glass": bool(r.context.get("break_glass")),
        "studies": [o.object_id for o in r.objects if o.id_type.code == "110180"],
    }


def _time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInputError(f"{name}: use an ISO 8601 date or time") from None


@router.get("/audit/records")
def audit_records(
    principal: CurrentPrincipal, services: ServicesDep,
    since: str | None = None, until: str | None = None, user: str | None = None,
    event: str | None = None, outcome: int | None = Query(None, ge=0, le=12),
    study: str | None = None, after: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=MAX_LIMIT),
) -> dict[str, Any]:
    """Search the audit trail (audited as Audit Log Used, PS3.15 A.5.3.2); auditors only."""
    f = AuditFilter(since=_time(since, "since"), until=_time(until, "until"), user_id=user or None,
                    study_uid=study or None, event=event or None, outcome=outcome,
                    after_seq=after, limit=limit)
    records = AuditQueryService(services.audit, services.policy).search(principal, f)
    return {"records": [_summary(r) for r in records],
            "next_after": records[-1].seq if len(records) == limit else None}


@router.get("/audit/records/{seq}")
def audit_record(seq: int, principal: CurrentPrincipal, services: ServicesDep) -> dict[str, Any]:
    """One record in full (participants, objects, context), for the detail view."""
    records = AuditQueryService(services.audit, services.policy).search(
        principal, AuditFilter(after_seq=max(0, seq - 1), limit=1))
    if not records or records[0].seq != seq:
        raise NotFoundError("no such audit record")
    r = records[0]
    return {**_summary(r), "detail": _jsonable(r)}


@router.get("/audit/verify")
def audit_verify(principal: CurrentPrincipal, services: ServicesDep) -> dict[str, Any]:
    """Chain verification status (HMAC hash chain + signed checkpoints); auditors only."""
    if scope_for(principal.roles, AUDIT_READ) is Scope.NONE:
        raise ForbiddenError("reading the audit log needs the auditor role")
    report = services.audit.verify()
    return _jsonable(report)  # type: ignore[no-any-return]


class DisclosureRequest(BaseModel):
    patient_id: str = Field("", max_length=64)
    patient_key_id: str = Field("", max_length=128)
    since: str | None = None
    until: str | None = None


@router.post("/audit/disclosures")
def audit_disclosures(body: DisclosureRequest, principal: CurrentPrincipal,
                      services: ServicesDep) -> dict[str, Any]:
    """Accounting of disclosures for one patient (HIPAA 164.528), by Patient ID or key id."""
    if scope_for(principal.roles, AUDIT_READ) is Scope.NONE:
        raise ForbiddenError("reading the audit log needs the auditor role")
    keys = [body.patient_key_id] if body.patient_key_id else []
    if body.patient_id and not keys:
        # Patient ID -> key ids through the blind index (the archive's lookup; IDs are never stored clear).
        keys = list(services.archive.patient_key_ids(body.patient_id))
    if not keys:
        return {"patients": 0, "disclosures": []}
    svc = AuditQueryService(services.audit, services.policy)
    rows: list[dict[str, object]] = []
    for key in keys:
        rows.extend(disclosures_as_rows(svc.disclosures(
            principal, key, since=_time(body.since, "since"), until=_time(body.until, "until"))))
    rows.sort(key=lambda d: int(str(d["seq"])))
    return {"patients": len(keys), "disclosures": rows}

