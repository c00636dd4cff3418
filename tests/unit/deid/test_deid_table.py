"""The shipped PS3.15 Table E.1-1 data: complete, well-formed, edition recorded."""

from __future__ import annotations

import pytest

from dicomvault.deid.options import OPTION_CODES
from dicomvault.deid.profile_table import ACTION_CODES, load_table

# Rows checked by hand against the standard's table (tag, basic action, option columns).
KNOWN_ROWS = [
    (0x00080050, "Z", {}),                                   # Accession Number
    (0x00184000, "X", {"113105": "C"}),                      # Acquisition Comments
    (0x00400555, "X/Z", {"113104": "C"}),                    # Acquisition Context Sequence
    (0x00080022, "X/Z", {"113106": "K", "113107": "C"}),     # Acquisition Date
    (0x0008002A, "X/Z/D", {"113106": "K", "113107": "C"}),   # Acquisition DateTime
    (0x00181400, "X/D", {"113105": "C"}),                    # Acq. Device Processing Descr.
    (0x00181002, "U", {"113109": "K", "113110": "K"}),       # Device UID
    (0x00181000, "X/Z/D", {"113109": "K"}),                  # Device Serial Number
    (0x00120060, "Z", {"113112": "K"}),                      # Clinical Trial Coord. Center
    (0x0040A730, "D", {"113104": "C"}),                      # Content Sequence
    (0x00700084, "Z/D", {}),                                 # Content Creator's Name
    (0x00100010, "Z", {}),                                   # Patient's Name
    (0x00100020, "Z/D", {}),                                 # Patient ID
    (0x0020000D, "U", {"113110": "K"}),                      # Study Instance UID
    (0x00080018, "U", {"113110": "K"}),                      # SOP Instance UID
    (0x00081140, "X/Z/U*", {"113110": "K"}),                 # Referenced Image Sequence
    (0x00080080, "X/Z/D", {"113112": "K"}),                  # Institution Name
    (0x00101010, "X", {"113108": "K"}),                      # Patient's Age
    (0xFFFAFFFA, "X", {}),                                   # Digital Signatures Sequence
]


def test_table_has_whole_profile_and_edition() -> None:
    table = load_table()
    assert len(table.rows) >= 600
    assert "2024" in table.edition
    assert "idiscore" in table.provenance and "cross-checked" in table.provenance


def test_every_row_uses_known_action_codes_and_option_codes() -> None:
    codes = {c.value for c in OPTION_CODES.values()}
    for row in load_table().rows:
        assert row.basic in ACTION_CODES
        assert set(row.options) <= codes
        assert set(row.options.values()) <= {"K", "C"}


def test_every_option_with_a_table_column_has_rows() -> None:
    used = {code for row in load_table().rows for code in row.options}
    # 113101 (pixels) and 113102 (visual features) act on pixel data, not on attributes.
    assert used == {c.value for c in OPTION_CODES.values()} - {"113101", "113102"}


@pytest.mark.parametrize(("tag", "basic", "options"), KNOWN_ROWS)
def test_known_row_matches_standard(tag: int, basic: str, options: dict[str, str]) -> None:
    row = load_table().lookup(tag)
    assert row is not None
    assert (row.basic, dict(row.options)) == (basic, options)


@pytest.mark.parametrize(
    ("tag", "name"),
    [
        (0x50001234, "Curve Data"),
        (0x501E0022, "Curve Data"),
        (0x60003000, "Overlay Data"),
        (0x601E4000, "Overlay Comments"),
        (0x00091001, "Private Attributes"),
        (0x7FE11010, "Private Attributes"),
    ],
)
def test_repeating_groups_and_private_map_to_their_rows(tag: int, name: str) -> None:
    row = load_table().lookup(tag)
    assert row is not None and row.name == name


@pytest.mark.parametrize("tag", [0x60000010, 0x00090010, 0x00280010])
def test_unlisted_tags_have_no_row(tag: int) -> None:
    assert load_table().lookup(tag) is None
