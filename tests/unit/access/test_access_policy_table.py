"""Role x permission table for ``Policy.authorize`` (DESIGN.md "Access model").

The resource is an identified study nobody is assigned to.  ``Y`` = allowed,
``-`` = denied, ``H`` = denied *and* answered as "not found" (scoped roles must
not learn that the study exists).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dicomvault.access.permissions import (
    AUDIT_READ,
    ROLE_PERMISSIONS,
    STUDY_DELETE,
    STUDY_EXPORT,
    STUDY_READ,
    STUDY_SEARCH,
    STUDY_WRITE,
    USER_MANAGE,
)
from dicomvault.access.policy import NoAssignments, Policy, Resource
from dicomvault.access.principal import Principal

STUDY = "1.2.826.0.1.3680043.10.1.1"
ACTIONS = [STUDY_READ, STUDY_SEARCH, STUDY_WRITE, STUDY_DELETE, STUDY_EXPORT, AUDIT_READ, USER_MANAGE]

#            read search write delete export audit users
TABLE = {
    "admin":           "-     -     -     -     -     -     Y",
    "radiologist":     "Y     Y     Y     -     Y     -     -",
    "technologist":    "Y     Y     Y     -     -     -     -",
    "referring":       "H     H     -     -     -     -     -",
    "researcher":      "H     H     -     -     -     -     -",
    "auditor":         "-     -     -     -     -     Y     -",
    "service":         "Y     Y     Y     -     -     -     -",
    "patient":         "H     H     -     -     -     -     -",
    "privacy-officer": "-     -     -     Y     Y     Y     -",
    "system":          "Y     Y     Y     Y     Y     Y     Y",
}
CASES = [
    (role, action, mark)
    for role, row in TABLE.items()
    for action, mark in zip(ACTIONS, row.split(), strict=True)
]
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _resource(action: str) -> Resource:
    if action == AUDIT_READ:
        return Resource("audit")
    if action == USER_MANAGE:
        return Resource("user")
    return Resource("study", study_uid=STUDY, patient_key_id="pk-1")


def _principal(role: str, **kw) -> Principal:
    return Principal(id=f"u-{role}", kind="user", name=role, roles=frozenset({role}), door="test",
                     mfa_verified=True, **kw)


def test_table_covers_every_shipped_role():
    assert set(TABLE) == set(ROLE_PERMISSIONS)


@pytest.mark.parametrize(("role", "action", "mark"), CASES, ids=[f"{r}-{a}" for r, a, _ in CASES])
def test_policy_decision_role_action(role, action, mark):
    decision = Policy(NoAssignments(), clock=lambda: NOW).authorize(
        _principal(role), action, _resource(action))
    assert decision.allowed is (mark == "Y")
    if mark == "H":
        assert decision.hide_existence is True
    if mark == "Y":
        assert decision.break_glass is False


def test_referring_unassigned_study_hides_existence():
    decision = Policy(clock=lambda: NOW).authorize(_principal("referring"), STUDY_READ,
                                                   Resource("study", STUDY))
    assert not decision.allowed and decision.hide_existence


def test_referring_with_break_glass_allowed_and_flagged():
    grant = ((STUDY, NOW + timedelta(minutes=30)),)
    decision = Policy(clock=lambda: NOW).authorize(_principal("referring", break_glass=grant),
                                                   STUDY_READ, Resource("study", STUDY))
    assert decision.allowed and decision.break_glass


def test_referring_with_expired_break_glass_hidden():
    grant = ((STUDY, NOW - timedelta(seconds=1)),)
    decision = Policy(clock=lambda: NOW).authorize(_principal("referring", break_glass=grant),
                                                   STUDY_READ, Resource("study", STUDY))
    assert not decision.allowed and decision.hide_existence


def test_break_glass_for_other_study_does_not_leak():
    grant = (("1.2.3.4", NOW + timedelta(minutes=30)),)
    decision = Policy(clock=lambda: NOW).authorize(_principal("referring", break_glass=grant),
                                                   STUDY_READ, Resource("study", STUDY))
    assert not decision.allowed


def test_researcher_identified_data_denied():
    decision = Policy(clock=lambda: NOW).authorize(_principal("researcher"), STUDY_READ,
                                                   Resource("study", STUDY))
    assert not decision.allowed and decision.reason == "identified data"


def test_admin_pixels_denied():
    decision = Policy(clock=lambda: NOW).authorize(_principal("admin"), STUDY_READ,
                                                   Resource("study", STUDY))
    assert not decision.allowed


def test_token_scope_narrows_role():
    principal = _principal("radiologist", scopes=frozenset({STUDY_SEARCH}))
    policy = Policy(clock=lambda: NOW)
    assert policy.authorize(principal, STUDY_SEARCH, Resource("study", STUDY)).allowed
    assert not policy.authorize(principal, STUDY_READ, Resource("study", STUDY)).allowed


def test_query_scope_referring_lists_break_glass_studies():
    grant = ((STUDY, NOW + timedelta(minutes=30)),)
    scope = Policy(clock=lambda: NOW).query_scope(_principal("referring", break_glass=grant), STUDY_SEARCH)
    assert scope.study_uids == frozenset({STUDY}) and not scope.unrestricted
