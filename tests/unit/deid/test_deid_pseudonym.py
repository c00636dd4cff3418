"""Keyed pseudonyms: consistent across a study and across runs, separate per project/key."""

from __future__ import annotations

import re

import pytest

from dicomvault.deid import DeidConfig, Option, deidentify
from dicomvault.deid.pseudonym import Pseudonymizer, shift_date, shift_datetime
from tests.unit.deid.deid_builders import KEY, PATIENT_ID, full_table_dataset, roundtrip

UID_RE = re.compile(r"^2\.25\.(0|[1-9][0-9]*)$")


@pytest.fixture(scope="module")
def study():  # type: ignore[no-untyped-def]
    """Three instances of one study; instance 2 and 3 reference instance 1."""
    return [roundtrip(full_table_dataset(instance="1")),
            roundtrip(full_table_dataset(instance="2", referenced_instance="1")),
            roundtrip(full_table_dataset(instance="3", referenced_instance="1"))]


def test_uids_consistent_across_a_study(study) -> None:  # type: ignore[no-untyped-def]
    config = DeidConfig(project="LUNG")
    outs = [deidentify(ds, config, KEY).dataset for ds in study]
    assert len({o.StudyInstanceUID for o in outs}) == 1
    assert len({o.SeriesInstanceUID for o in outs}) == 1
    assert len({o.FrameOfReferenceUID for o in outs}) == 1
    assert len({o.SOPInstanceUID for o in outs}) == 3
    for out in outs[1:]:  # references still point at the (new) referenced instance
        assert out.ReferencedImageSequence[0].ReferencedSOPInstanceUID == outs[0].SOPInstanceUID
    assert len({str(o.PatientID) for o in outs}) == 1


def test_uids_and_pseudonyms_stable_across_runs(study) -> None:  # type: ignore[no-untyped-def]
    config = DeidConfig(project="LUNG")
    first = deidentify(study[0], config, KEY).dataset
    second = deidentify(study[0], DeidConfig(project="LUNG"), bytes(KEY)).dataset
    assert first.SOPInstanceUID == second.SOPInstanceUID
    assert (first.PatientID, first.PatientName) == (second.PatientID, second.PatientName)


@pytest.mark.parametrize(("project", "key"), [("OTHER", KEY), ("LUNG", bytes(32))])
def test_other_project_or_key_gives_unlinkable_pseudonyms(study, project: str, key: bytes) -> None:  # type: ignore[no-untyped-def]
    base = deidentify(study[0], DeidConfig(project="LUNG"), KEY).dataset
    other = deidentify(study[0], DeidConfig(project=project), key).dataset
    assert other.SOPInstanceUID != base.SOPInstanceUID
    assert other.PatientID != base.PatientID


def test_generated_uids_are_valid_2_25_uids(study) -> None:  # type: ignore[no-untyped-def]
    out = deidentify(study[0], DeidConfig(project="LUNG"), KEY).dataset
    uids = [str(e.value) for e in out.iterall() if e.VR == "UI" and e.value
            and str(e.value).startswith("2.25.")]
    assert len(uids) > 20
    assert all(UID_RE.match(u) and len(u) <= 64 for u in uids)


def test_project_pseudonyms_replace_patient_identity(study) -> None:  # type: ignore[no-untyped-def]
    out = deidentify(study[0], DeidConfig(project="Lung 2026"), KEY).dataset
    assert re.fullmatch(r"LUNG2026-[A-Z2-7]{12}", str(out.PatientID))
    assert str(out.PatientName) == "LUNG2026^" + str(out.PatientID).split("-")[1]


def test_mapping_records_allow_reidentification(study) -> None:  # type: ignore[no-untyped-def]
    result = deidentify(study[0], DeidConfig(project="LUNG"), KEY)
    by_pseudonym = {m.pseudonym: m for m in result.mappings}
    assert by_pseudonym[str(result.dataset.SOPInstanceUID)].original == study[0].SOPInstanceUID
    assert by_pseudonym[str(result.dataset.PatientID)].original.endswith(PATIENT_ID)


def test_mapping_not_kept_when_project_says_so(study) -> None:  # type: ignore[no-untyped-def]
    result = deidentify(study[0], DeidConfig(project="LUNG", keep_mapping=False,
                                             options=frozenset({Option.RETAIN_MODIFIED_DATES})),
                        KEY)
    assert result.mappings == []
    assert result.released


def test_date_offset_is_per_patient_and_deterministic() -> None:
    p = Pseudonymizer(KEY, "LUNG")
    assert p.date_offset_days("A") == Pseudonymizer(KEY, "LUNG").date_offset_days("A")
    offsets = {p.date_offset_days(str(i)) for i in range(50)}
    assert len(offsets) > 40 and all(-3650 <= o <= -365 for o in offsets)


@pytest.mark.parametrize(
    ("func", "value", "days", "expected"),
    [
        (shift_date, "20240301", -1, "20240229"),
        (shift_date, "2024", -1, ""),
        (shift_date, "20241399", -1, ""),
        (shift_datetime, "20240101120000.5+0100", -366, "20221231120000.5+0100"),
        (shift_datetime, "2024", -1, ""),
    ],
)
def test_date_shift_cases(func, value: str, days: int, expected: str) -> None:  # type: ignore[no-untyped-def]
    assert func(value, days) == expected


def test_short_key_is_refused() -> None:
    from dicomvault.errors import InvalidInputError

    with pytest.raises(InvalidInputError):
        Pseudonymizer(b"short", "LUNG")
