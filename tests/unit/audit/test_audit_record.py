"""Canonical bodies: deterministic, PHI sealed, derived search keys (PS3.15 A.5.1 content)."""

from __future__ import annotations

import json

import pytest
from audit_events_table import EVENTS

from dicomvault.audit.events import patient_object
from dicomvault.audit.record import canonical, derive, seal_event
from dicomvault.errors import InvalidInputError, UnavailableError


def test_canonical_is_deterministic_and_compact(dek_map) -> None:
    body = seal_event(EVENTS["wado"], dek_map.get, "n")
    body.update(seq=1, recorded="2026-01-01T00:00:00.000000Z")
    text = canonical(body)
    assert text == canonical(json.loads(text))
    assert ", " not in text and ": " not in text


def test_sealed_body_has_no_phi_and_fresh_nonces(dek_map) -> None:
    a = seal_event(EVENTS["wado"], dek_map.get, "n")
    b = seal_event(EVENTS["wado"], dek_map.get, "n")
    text = json.dumps(a)
    assert "PID-001" not in text and "DOE^JANE" not in text
    assert a["objects"][0]["sensitive_id"] != b["objects"][0]["sensitive_id"]


def test_phi_without_patient_key_is_refused(dek_map) -> None:
    from dataclasses import replace

    obj = replace(patient_object("pk-1", "PID", "NAME"), patient_key_id=None)
    with pytest.raises(InvalidInputError):
        seal_event(replace(EVENTS["wado"], objects=[obj]), dek_map.get, "n")
    with pytest.raises(UnavailableError):
        seal_event(replace(EVENTS["wado"], objects=[patient_object("pk-x", "PID", "N")]),
                   dek_map.get, "n")


DERIVED = [
    ("wado", "110104", "u:alice", {("patient", "pk-1"), ("study", "1.2.826.0.1.3680043.8.498.77")}, 9),
    ("c-store", "110104", "ae:CT01", {("patient", "pk-1"), ("study", "1.2.826.0.1.3680043.8.498.77")}, 3),
    ("login", "110114", "u:alice", {("user", "alice")}, 0),
    ("qido", "110112", "u:alice", set(), 0),
]


@pytest.mark.parametrize(("name", "code", "user", "subjects", "count"), DERIVED,
                         ids=[d[0] for d in DERIVED])
def test_derived_columns(dek_map, name, code, user, subjects, count) -> None:
    body = seal_event(EVENTS[name], dek_map.get, "n")
    body.update(seq=1, recorded="2026-01-01T00:00:00.000000Z")
    d = derive(body)
    assert (d.event_code, d.user_id, set(d.subjects), d.instance_count) == (code, user, subjects, count)
