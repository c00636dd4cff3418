"""Permissions (verbs on resources), scopes and the roles that ship (DESIGN.md "Access model")."""

from __future__ import annotations

from enum import Enum

STUDY_READ = "study:read"          # metadata + pixels (WADO, C-GET, C-MOVE)
STUDY_SEARCH = "study:search"      # QIDO, C-FIND
STUDY_WRITE = "study:write"        # STOW, C-STORE
STUDY_EXPORT = "study:export"      # de-identified export, GDPR access export
STUDY_DELETE = "study:delete"
PATIENT_ERASE = "patient:erase"
AUDIT_READ = "audit:read"
USER_MANAGE = "user:manage"
PEER_MANAGE = "peer:manage"
CONFIG_MANAGE = "config:manage"
KEY_MANAGE = "key:manage"
REIDENTIFY = "deid:reidentify"
BREAK_GLASS = "study:break-glass"
DIMSE_ECHO = "dimse:echo"

ALL_PERMISSIONS = frozenset({
    STUDY_READ, STUDY_SEARCH, STUDY_WRITE, STUDY_EXPORT, STUDY_DELETE, PATIENT_ERASE,
    AUDIT_READ, USER_MANAGE, PEER_MANAGE, CONFIG_MANAGE, KEY_MANAGE, REIDENTIFY, BREAK_GLASS,
    DIMSE_ECHO,
})


class Scope(str, Enum):  # noqa: UP042 - str() of members is relied on
    """How far a permission reaches."""

    ALL = "all"                  # every identified study
    ASSIGNED = "assigned"        # studies on the principal's care team (or referring)
    OWN = "own"                  # the patient's own studies
    DEIDENTIFIED = "deidentified"  # de-identified collections only
    NONE = "none"


#: role -> permission -> scope.  "system" is the archive's own jobs and the local CLI operator.
ROLE_PERMISSIONS: dict[str, dict[str, Scope]] = {
    "admin": {
        USER_MANAGE: Scope.ALL, PEER_MANAGE: Scope.ALL, CONFIG_MANAGE: Scope.ALL,
        KEY_MANAGE: Scope.ALL, DIMSE_ECHO: Scope.ALL,
    },
    "radiologist": {
        STUDY_READ: Scope.ALL, STUDY_SEARCH: Scope.ALL, STUDY_WRITE: Scope.ALL,
        STUDY_EXPORT: Scope.ALL, DIMSE_ECHO: Scope.ALL,
    },
    "technologist": {
        STUDY_READ: Scope.ALL, STUDY_SEARCH: Scope.ALL, STUDY_WRITE: Scope.ALL,
        DIMSE_ECHO: Scope.ALL,
    },
    "referring": {
        STUDY_READ: Scope.ASSIGNED, STUDY_SEARCH: Scope.ASSIGNED, BREAK_GLASS: Scope.ALL,
        DIMSE_ECHO: Scope.ALL,
    },
    "researcher": {
        STUDY_READ: Scope.DEIDENTIFIED, STUDY_SEARCH: Scope.DEIDENTIFIED, DIMSE_ECHO: Scope.ALL,
    },
    "auditor": {AUDIT_READ: Scope.ALL},
    "service": {
        STUDY_READ: Scope.ALL, STUDY_SEARCH: Scope.ALL, STUDY_WRITE: Scope.ALL, DIMSE_ECHO: Scope.ALL,
    },
    "patient": {STUDY_READ: Scope.OWN, STUDY_SEARCH: Scope.OWN},
    "privacy-officer": {
        PATIENT_ERASE: Scope.ALL, STUDY_EXPORT: Scope.ALL, STUDY_DELETE: Scope.ALL,
        REIDENTIFY: Scope.ALL, AUDIT_READ: Scope.ALL,
    },
    "system": {p: Scope.ALL for p in ALL_PERMISSIONS},
}

#: Roles that can see PHI and therefore must use MFA for interactive login.
PHI_ROLES = frozenset({"radiologist", "technologist", "referring", "patient", "privacy-officer",
                       "auditor", "admin"})

#: Scope strength, for combining several roles.
_RANK = {Scope.NONE: 0, Scope.DEIDENTIFIED: 1, Scope.OWN: 2, Scope.ASSIGNED: 3, Scope.ALL: 4}


def scope_for(roles: frozenset[str], permission: str) -> Scope:
    """The widest scope any of ``roles`` grants for ``permission``."""
    best = Scope.NONE
    for role in roles:
        scope = ROLE_PERMISSIONS.get(role, {}).get(permission, Scope.NONE)
        if _RANK[scope] > _RANK[best]:
            best = scope
    return best
