"""Basic Profile (PS3.15 E.1-1) over a synthetic instance holding every table attribute."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from dicomvault.deid import DeidConfig, deidentify
from dicomvault.deid.engine import COMPOUND
from dicomvault.deid.profile_table import load_table
from tests.unit.deid.deid_builders import (
    DATE,
    FAMILY,
    KEY,
    MARKER,
    PATIENT_ID,
    roundtrip,
    table_tags,
    text_values,
)

ROWS = sorted(table_tags().items())
SPECIAL = {0x00100010, 0x00100020}  # Patient's Name / ID: project pseudonyms
EMPTY = (None, "", b"")


def _is_empty(elem) -> bool:  # type: ignore[no-untyped-def]
    if elem.VR == "SQ":
        return len(elem.value) == 0
    return elem.value in EMPTY or elem.value == []


@pytest.mark.parametrize(("tag", "index"), ROWS, ids=[f"{t:08X}" for t, _ in ROWS])
def test_row_gets_its_action_under_basic_profile(tag: int, index: int, full_input: Dataset,
                                                 run_full) -> None:  # type: ignore[no-untyped-def]
    """Annex E action → result, for every row of the table."""
    out = run_full().dataset
    row = load_table().rows[index]
    action = COMPOUND["conformant"].get(row.basic, row.basic)
    original = full_input[tag]
    if tag in SPECIAL:
        assert out[tag].value != original.value and "TEST" in str(out[tag].value)
    elif action == "X":
        assert tag not in out
    elif action == "Z":
        assert tag in out and _is_empty(out[tag])
    elif action == "D":
        assert tag in out and not _is_empty(out[tag])
        assert out[tag].value != original.value
    elif action == "U":
        assert tag in out
        if out[tag].VR == "SQ":
            ref = out[tag].value[0].ReferencedSOPInstanceUID
            assert ref.startswith("2.25.")
        else:
            assert str(out[tag].value).startswith("2.25.")
    else:  # pragma: no cover - the basic profile has no other single codes
        pytest.fail(f"unexpected basic action {action}")


def test_no_identifying_value_survives_under_basic_profile(full_input: Dataset,
                                                           run_full) -> None:  # type: ignore[no-untyped-def]
    result = run_full()
    assert result.released, result.verification.findings
    original_uids = {str(e.value) for e in full_input.iterall() if e.VR == "UI"
                     and str(e.value).startswith("1.2.826.0.1.3680043.10.543")}
    leaks = [
        path for path, text in text_values(roundtrip(result.dataset))
        if MARKER.search(text) or FAMILY in text.upper() or PATIENT_ID in text or DATE in text
        or text in original_uids
    ]
    assert leaks == []


def test_input_dataset_is_not_modified(full_input: Dataset) -> None:
    before = full_input.to_json_dict()
    deidentify(full_input, DeidConfig(project="TEST"), KEY)
    assert full_input.to_json_dict() == before


def test_output_is_marked_per_ps3_15_e_1_1(run_full) -> None:  # type: ignore[no-untyped-def]
    out = run_full().dataset
    assert out.PatientIdentityRemoved == "YES"
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    assert [i.CodeValue for i in out.DeidentificationMethodCodeSequence] == ["113100"]
    assert out.DeidentificationMethodCodeSequence[0].CodingSchemeDesignator == "DCM"
    assert any("Basic Profile" in v for v in out.DeidentificationMethod)
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert "SourceApplicationEntityTitle" not in out.file_meta


def test_private_attributes_removed_by_default(run_full) -> None:  # type: ignore[no-untyped-def]
    out = run_full().dataset
    assert [e.tag for e in out.iterall() if e.tag.is_private] == []


def test_overlay_and_curve_groups_removed_by_default(run_full) -> None:  # type: ignore[no-untyped-def]
    out = run_full().dataset
    assert not [t for t in out.keys() if 0x5000 <= t.group <= 0x601E]


def test_sr_content_is_dummied_but_keeps_its_structure(run_full) -> None:  # type: ignore[no-untyped-def]
    content = run_full().dataset.ContentSequence
    assert [i.ValueType for i in content] == ["TEXT", "PNAME", "UIDREF", "CONTAINER"]
    assert content[0].ConceptNameCodeSequence[0].CodeValue == "121106"
    assert FAMILY not in str(content[0].TextValue).upper()
    assert str(content[2].UID).startswith("2.25.")
    assert FAMILY not in str(content[3].ContentSequence[0].TextValue).upper()


def test_nested_sequence_uids_are_mapped_and_removed_items_gone(run_full) -> None:  # type: ignore[no-untyped-def]
    out = run_full().dataset
    seq = out.SourceImageSequence  # X/Z/U*: kept, UIDs inside replaced
    assert seq[0].ReferencedSOPInstanceUID.startswith("2.25.")
    assert "RequestAttributesSequence" not in seq[0]


@pytest.mark.parametrize(
    ("tag", "expected"),
    [(0x00080080, "X"), (0x00100020, "Z"), (0x00081140, "X"), (0x0008002A, "X")],
)
def test_minimal_compound_policy_takes_first_alternative(tag: int, expected: str,
                                                         full_input: Dataset) -> None:
    out = deidentify(full_input, DeidConfig(project="TEST", compound="minimal"), KEY).dataset
    if tag == 0x00100020:
        assert tag in out  # Patient ID always becomes the project pseudonym
    elif expected == "X":
        assert tag not in out


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "test-SR.dcm",
                                  "JPEG2000.dcm", "SC_rgb_rle_2frame.dcm", "waveform_ecg.dcm",
                                  "examples_overlay.dcm", "rtdose.dcm", "priv_SQ.dcm"])
def test_pydicom_corpus_file_released_and_decodes(name: str) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    source = pydicom.dcmread(get_testdata_file(name))
    result = deidentify(source, DeidConfig(project="TEST"), KEY)
    assert result.released, result.verification.findings
    back = roundtrip(result.dataset)
    if "PixelData" in back:
        assert back.pixel_array.shape == source.pixel_array.shape
    for keyword in ("PatientName", "PatientID"):
        value = str(source.get(keyword, "") or "")
        if value:
            assert value not in [t for _, t in text_values(back)]
    if "SOPInstanceUID" in source:
        assert back.SOPInstanceUID != source.SOPInstanceUID
    assert not [e for e in back.iterall() if e.tag.is_private]
