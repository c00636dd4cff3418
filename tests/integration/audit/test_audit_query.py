"""Audit search and accounting of disclosures: auditor only, itself audited (issue 4 §4)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from audit_factories import access_event, login_event, query_event

from dicomvault.access.principal import Principal
from dicomvault.audit.chain import AuditTrail
from dicomvault.audit.query import AuditFilter, AuditQueryService
from dicomvault.errors import ForbiddenError

pytestmark = pytest.mark.integration
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
AUDITOR = Principal(id="u:audra", kind="user", name="Audra", roles=frozenset({"auditor"}),
                    address="10.0.0.2", door="rest")
RADIOLOGIST = Principal(id="u:alice", kind="user", name="Alice", roles=frozenset({"radiologist"}),
                        address="10.0.0.5", door="rest")


@pytest.fixture
def filled(trail: AuditTrail) -> AuditTrail:
    at = lambda e, m: dataclasses.replace(e, time=T0 + timedelta(minutes=m))  # noqa: E731
    trail.append([
        at(access_event(1, user="u:alice"), 0),                    # 1 pk-1
        at(access_event(2, user="u:bob", patient="pk-2"), 1),      # 2 pk-2
        at(login_event(False, user="bob"), 2),                     # 3
        at(query_event(user="u:alice"), 3),                        # 4
        at(dataclasses.replace(access_event(3, user="u:carl"),
                               context={"break_glass": True, "reason": "ER"}), 4),  # 5 pk-1
    ])
    return trail


SEARCHES = [
    ("user", AuditFilter(user_id="u:alice"), [1, 4]),
    ("patient", AuditFilter(patient_key_id="pk-1"), [1, 5]),
    ("study", AuditFilter(study_uid="1.2.826.0.1.3680043.8.498.1.2"), [2]),
    ("event-name", AuditFilter(event="query"), [4]),
    ("event-code", AuditFilter(event="110114"), [3]),
    ("outcome", AuditFilter(outcome=4), [3]),
    ("time", AuditFilter(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)), [2, 3]),
    ("page", AuditFilter(after_seq=3, limit=1), [4]),
    ("combined", AuditFilter(user_id="u:alice", event="instances-transferred"), [1]),
]


@pytest.mark.parametrize(("name", "f", "seqs"), SEARCHES, ids=[s[0] for s in SEARCHES])
def test_search_filters(filled: AuditTrail, name: str, f: AuditFilter, seqs: list[int]) -> None:
    svc = AuditQueryService(filled)
    assert [r.seq for r in svc.search(AUDITOR, f)] == seqs


def test_search_is_audited_as_audit_log_used(filled: AuditTrail) -> None:
    svc = AuditQueryService(filled)
    svc.search(AUDITOR, AuditFilter(user_id="u:alice"))
    head, _ = filled.head()
    used = filled.get(head)
    assert used is not None
    assert used.event.code == "110101" and used.outcome == 0
    assert used.requestor is not None and used.requestor.user_id == "u:audra"
    assert b"u:alice" in used.objects[0].query


def test_search_refused_for_non_auditor_and_audited(filled: AuditTrail) -> None:
    svc = AuditQueryService(filled)
    with pytest.raises(ForbiddenError):
        svc.search(RADIOLOGIST, AuditFilter())
    head, _ = filled.head()
    refused = filled.get(head)
    assert refused is not None
    assert refused.event.code == "110101" and refused.outcome == 4
    assert refused.requestor.user_id == "u:alice"


def test_disclosures_report_one_patient(filled: AuditTrail) -> None:
    svc = AuditQueryService(filled)
    report = svc.disclosures(AUDITOR, "pk-1")
    assert [(d.seq, d.user_id) for d in report] == [(1, "u:alice"), (5, "u:carl")]
    assert report[1].reason == "break-the-glass ER"
    assert report[0].studies == ("1.2.826.0.1.3680043.8.498.1.1",)
    assert report[0].address == "10.0.0.5"
    assert svc.disclosures(AUDITOR, "pk-unknown") == []


def test_disclosures_skip_imports(filled: AuditTrail) -> None:
    from dicomvault.audit.events import Action

    filled.append([dataclasses.replace(access_event(9, user="ae:CT01"), action=Action.CREATE)])
    svc = AuditQueryService(filled)
    assert "ae:CT01" not in [d.user_id for d in svc.disclosures(AUDITOR, "pk-1")]
