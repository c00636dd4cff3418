"""The single policy decision point (DESIGN.md invariant 2, "one door").

Every door turns a request into ``(principal, action, resource)`` and the
service layer calls ``Policy.authorize`` before reading or writing anything.
For searches, ``Policy.query_scope`` says which studies a principal may see so
that results are filtered in the service (never in the client).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from dicomvault.access.permissions import Scope, scope_for
from dicomvault.access.principal import Principal


@dataclass(frozen=True)
class Resource:
    """What an action is about.  ``study_uid`` for study-level resources."""

    kind: str  # study, patient, audit, user, peer, config, keys, system
    study_uid: str | None = None
    patient_key_id: str | None = None
    deidentified: bool = False


@dataclass(frozen=True)
class Decision:
    allowed: bool
    scope: Scope
    reason: str
    #: True when access was granted only through break-the-glass.
    break_glass: bool = False
    #: When denied: answer "not found" (resource outside scope) rather than "forbidden".
    hide_existence: bool = False


@dataclass(frozen=True)
class QueryScope:
    """Restriction a search must apply for one principal."""

    scope: Scope
    #: For ASSIGNED/OWN: the study UIDs visible (care team + break-the-glass).
    study_uids: frozenset[str] = frozenset()
    #: For OWN: the patient key ids that belong to the principal.
    patient_key_ids: frozenset[str] = frozenset()

    @property
    def unrestricted(self) -> bool:
        return self.scope is Scope.ALL


class AssignmentLookup(Protocol):
    """Care-team and ownership facts the policy needs (implemented over the index)."""

    def assigned_study_uids(self, principal: Principal) -> frozenset[str]: ...

    def owned_patient_key_ids(self, principal: Principal) -> frozenset[str]: ...

    def is_deidentified_study(self, study_uid: str) -> bool: ...


class NoAssignments:
    """An ``AssignmentLookup`` with no care teams (tests, CLI)."""

    def assigned_study_uids(self, principal: Principal) -> frozenset[str]:
        return frozenset()

    def owned_patient_key_ids(self, principal: Principal) -> frozenset[str]:
        return frozenset()

    def is_deidentified_study(self, study_uid: str) -> bool:
        return False


class Policy:
    """Decides; never reads or writes data itself."""

    def __init__(
        self,
        assignments: AssignmentLookup | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.assignments = assignments or NoAssignments()
        self._clock = clock

    def _scope(self, principal: Principal, action: str) -> Scope:
        scope = scope_for(principal.roles, action)
        if principal.scopes is not None and action not in principal.scopes:
            return Scope.NONE
        return scope

    def _break_glass_uids(self, principal: Principal) -> frozenset[str]:
        now = self._clock()
        return frozenset(uid for uid, until in principal.break_glass if until > now)

    def authorize(self, principal: Principal, action: str, resource: Resource) -> Decision:
        """Decide whether ``principal`` may do ``action`` on ``resource``."""
        scope = self._scope(principal, action)
        study = resource.study_uid
        if scope is Scope.NONE:
            # The role lacks the permission altogether: 403 whatever the resource
            # (STANDARDS 13), which says nothing about whether it exists.  404 is
            # for resources outside a scope the principal does have.
            return Decision(False, scope, f"no permission {action}")
        if scope is Scope.ALL:
            # De-identified collections too: clinical roles keep access to them.
            return Decision(True, scope, "granted")
        if study is None:
            # Collection-level action (a search): allowed, results filtered by query_scope.
            return Decision(True, scope, "granted (filtered)")
        if scope is Scope.DEIDENTIFIED:
            ok = self.assignments.is_deidentified_study(study)
            return Decision(ok, scope, "de-identified collection" if ok else "identified data",
                            hide_existence=not ok)
        if scope is Scope.ASSIGNED:
            if study in self.assignments.assigned_study_uids(principal):
                return Decision(True, scope, "care team")
            if study in self._break_glass_uids(principal):
                return Decision(True, scope, "break-the-glass", break_glass=True)
            return Decision(False, scope, "not on care team", hide_existence=True)
        if scope is Scope.OWN:
            owned = self.assignments.owned_patient_key_ids(principal)
            ok = resource.patient_key_id is not None and resource.patient_key_id in owned
            return Decision(ok, scope, "own record" if ok else "not own record", hide_existence=not ok)
        return Decision(False, scope, "denied", hide_existence=True)

    def query_scope(self, principal: Principal, action: str) -> QueryScope:
        """The study filter a search for ``principal`` must apply."""
        scope = self._scope(principal, action)
        if scope is Scope.ASSIGNED:
            uids = self.assignments.assigned_study_uids(principal) | self._break_glass_uids(principal)
            return QueryScope(scope, study_uids=uids)
        if scope is Scope.OWN:
            return QueryScope(scope, patient_key_ids=self.assignments.owned_patient_key_ids(principal))
        return QueryScope(scope)
