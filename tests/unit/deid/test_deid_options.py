"""Each option of PS3.15 E.3 changes exactly what its Table E.1-1 column says, nothing else."""

from __future__ import annotations

from datetime import date

import pytest
from pydicom.dataset import Dataset

from dicomvault.deid import DeidConfig, Option, deidentify
from dicomvault.deid.options import OPTION_CODES
from dicomvault.deid.profile_table import load_table
from tests.unit.deid.deid_builders import DATE, FAMILY, KEY, table_tags

MARKING = {0x00120063, 0x00120064, 0x00280303, 0x00280301}
COLUMN_OPTIONS = [o for o in Option
                  if o not in (Option.CLEAN_PIXEL_DATA, Option.CLEAN_VISUAL_FEATURES)]


def flatten(ds: Dataset, parent: tuple[int, ...] = ()) -> dict[tuple[int, ...], object]:
    """{tag path: value}; a sequence contributes its item count and its items' leaves."""
    out: dict[tuple[int, ...], object] = {}
    for elem in ds:
        path = (*parent, int(elem.tag))
        if int(elem.tag) in MARKING and not parent:
            continue
        if elem.VR == "SQ":
            out[path] = len(elem.value)
            for i, item in enumerate(elem.value):
                out.update(flatten(item, (*path, -i - 1)))
        else:
            out[path] = repr(elem.value)
    return out


def in_column(tag: int, code: str) -> bool:
    row = load_table().lookup(tag)
    return row is not None and code in row.options


def explained(path: tuple[int, ...], code: str) -> bool:
    """A change at ``path`` is allowed if the leaf or an ancestor is in the option's column."""
    if code == "113103" and 0x6000 <= path[0] >> 16 <= 0x601E:
        return True  # the overlay group travels with its Overlay Data
    if code == "113111" and path[0] >> 16 & 1:
        return True  # private creators travel with their safe elements
    return any(in_column(t, code) for t in path if t >= 0)


@pytest.mark.parametrize("option", COLUMN_OPTIONS, ids=[o.value for o in COLUMN_OPTIONS])
def test_option_changes_exactly_its_column(option: Option, run_full) -> None:  # type: ignore[no-untyped-def]
    code = OPTION_CODES[option].value
    basic = flatten(run_full().dataset)
    with_option = run_full(option).dataset
    assert with_option is not None
    optioned = flatten(with_option)
    changed = {p for p in basic.keys() | optioned.keys() if basic.get(p) != optioned.get(p)}
    unexplained = sorted(p for p in changed if not explained(p, code))
    assert unexplained == []
    # ... and every attribute of the column present in the input did change.
    column_tags = {t for t in table_tags() if in_column(t, code)}
    if option is Option.RETAIN_SAFE_PRIVATE:
        column_tags = {0x0019100C}
    if option is Option.CLEAN_GRAPHICS:
        column_tags |= {0x50000022, 0x60003000, 0x60004000}
    untouched = sorted(t for t in column_tags if not any(p[0] == t for p in changed))
    assert untouched == []


@pytest.mark.parametrize("option", COLUMN_OPTIONS, ids=[o.value for o in COLUMN_OPTIONS])
def test_option_marks_its_cid_7050_code_and_stays_clean(option: Option, run_full) -> None:  # type: ignore[no-untyped-def]
    result = run_full(option)
    codes = [i.CodeValue for i in result.dataset.DeidentificationMethodCodeSequence]
    assert codes == ["113100", OPTION_CODES[option].value]
    assert result.released, result.verification.findings


@pytest.mark.parametrize("option", COLUMN_OPTIONS, ids=[o.value for o in COLUMN_OPTIONS])
def test_retained_attributes_equal_input(option: Option, full_input: Dataset, run_full) -> None:  # type: ignore[no-untyped-def]
    code = OPTION_CODES[option].value
    out = run_full(option).dataset
    for tag in table_tags():
        row = load_table().lookup(tag)
        assert row is not None
        if row.action([option]) == "K" and full_input[tag].VR != "SQ":
            assert out[tag].value == full_input[tag].value, f"{tag:08X} under {code}"


def test_modified_dates_shift_every_date_by_one_patient_offset(full_input: Dataset,
                                                              run_full) -> None:  # type: ignore[no-untyped-def]
    result = run_full(Option.RETAIN_MODIFIED_DATES)
    out = result.dataset
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    shifted = set()
    for tag in table_tags():
        row = load_table().lookup(tag)
        assert row is not None
        if row.options.get("113107") == "C" and full_input[tag].VR in ("DA", "DT"):
            shifted.add(str(out[tag].value)[:8])
    assert len(shifted) == 1
    moved = date.fromisoformat(shifted.pop())
    offset = (moved - date.fromisoformat(DATE)).days
    assert -3650 <= offset <= -365
    assert [m for m in result.mappings if m.kind == "date_offset"][0].pseudonym == str(offset)
    assert out.StudyTime == full_input.StudyTime  # whole-day shift keeps times of day


def test_full_dates_keep_dates_and_mark_unmodified(full_input: Dataset, run_full) -> None:  # type: ignore[no-untyped-def]
    out = run_full(Option.RETAIN_FULL_DATES).dataset
    assert out.LongitudinalTemporalInformationModified == "UNMODIFIED"
    assert out.StudyDate == full_input.StudyDate == DATE


def test_date_options_are_mutually_exclusive() -> None:
    from dicomvault.errors import InvalidInputError

    with pytest.raises(InvalidInputError):
        DeidConfig(options=frozenset({Option.RETAIN_FULL_DATES, Option.RETAIN_MODIFIED_DATES}))


def test_clean_descriptors_scrubs_identifiers_but_keeps_description(run_full) -> None:  # type: ignore[no-untyped-def]
    out = run_full(Option.CLEAN_DESCRIPTORS).dataset
    text = str(out.StudyDescription)
    assert FAMILY not in text.upper() and "desc" in text


def test_clean_structured_content_keeps_clinical_text(run_full) -> None:  # type: ignore[no-untyped-def]
    content = run_full(Option.CLEAN_STRUCTURED_CONTENT).dataset.ContentSequence
    text = str(content[0].TextValue)
    assert text.startswith("Mass stable") and FAMILY not in text.upper() and "2024" not in text
    assert FAMILY not in str(content[1].PersonName).upper()


def test_retain_safe_private_keeps_only_safe_listed_elements(run_full) -> None:  # type: ignore[no-untyped-def]
    out = run_full(Option.RETAIN_SAFE_PRIVATE).dataset
    private = sorted(int(e.tag) for e in out.iterall() if e.tag.is_private)
    assert private == [0x00190010, 0x0019100C]
    assert out[0x0019100C].value == "1000"


def test_retain_uids_keeps_every_uid(full_input: Dataset, run_full) -> None:  # type: ignore[no-untyped-def]
    out = run_full(Option.RETAIN_UIDS).dataset
    assert out.SOPInstanceUID == full_input.SOPInstanceUID
    assert out.SourceImageSequence[0].ReferencedSOPInstanceUID == \
        full_input.SourceImageSequence[0].ReferencedSOPInstanceUID


def test_clean_graphics_keeps_overlay_without_identifiers(run_full) -> None:  # type: ignore[no-untyped-def]
    out = run_full(Option.CLEAN_GRAPHICS).dataset
    assert out.overlay_array(0x6000).shape == (64, 64)
    assert FAMILY not in str(out[0x60004000].value).upper()
    assert 0x50003000 in out and FAMILY not in str(out[0x50000022].value).upper()


def test_all_column_options_together_still_release(full_input: Dataset) -> None:
    options = frozenset(o for o in COLUMN_OPTIONS if o is not Option.RETAIN_FULL_DATES)
    result = deidentify(full_input, DeidConfig(options=options, project="TEST"), KEY)
    assert result.released, result.verification.findings
    assert len(result.dataset.DeidentificationMethodCodeSequence) == 1 + len(options)
