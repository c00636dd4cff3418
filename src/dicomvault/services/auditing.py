"""Glue between services and the audit trail: the sink protocol and common records."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy.orm import Session

from dicomvault.access.policy import Decision
from dicomvault.access.principal import Principal
from dicomvault.audit import events as ev
from dicomvault.errors import DicomVaultError, ForbiddenError, NotFoundError

ARCHIVE_ID = "dicomvault"


class AuditSink(Protocol):
    """What services need from the audit trail (``audit.chain.AuditTrail``)."""

    def append(self, events: Sequence[ev.AuditEvent], session: Session | None = None) -> list[int]: ...

    def append_soon(self, events: Sequence[ev.AuditEvent]) -> None: ...


def actor(principal: Principal, *, source: bool) -> list[ev.ActiveParticipant]:
    """The requesting principal plus the archive, with source/destination roles (PS3.15 A.5.3)."""
    requestor = ev.ActiveParticipant(
        user_id=principal.id,
        user_name=principal.name,
        is_requestor=True,
        role=ev.RoleId.SOURCE if source else ev.RoleId.DESTINATION,
        network_access_point=principal.address,
        dicomvault_role=",".join(sorted(principal.roles)),
    )
    archive = ev.ActiveParticipant(
        user_id=ARCHIVE_ID,
        is_requestor=False,
        role=ev.RoleId.DESTINATION if source else ev.RoleId.SOURCE,
    )
    return [requestor, archive]


def deny_event(principal: Principal, door: str, action: str, study_uid: str | None) -> ev.AuditEvent:
    """A refused access decision: Security Alert (110113, Use of Restricted Function), minor failure."""
    objects = [ev.study_object(study_uid)] if study_uid else []
    return ev.AuditEvent(
        event_id=ev.EventId.SECURITY_ALERT,
        action=ev.Action.EXECUTE,
        outcome=ev.Outcome.MINOR_FAILURE,
        outcome_description=f"access denied: {action}",
        participants=actor(principal, source=True),
        objects=objects,
        event_types=[ev.EventType.USE_OF_RESTRICTED_FUNCTION],
        door=door,
        context={"permission": action, "decision": "deny"},
    )


def refusal(decision: Decision) -> DicomVaultError:
    """The error a door reports for a denied decision: 404 when existence must not leak."""
    if decision.hide_existence:
        return NotFoundError("not found")
    return ForbiddenError("not permitted")
