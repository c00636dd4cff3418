"""PS3.15 Annex E Table E.1-1 as shipped data, and the action each attribute gets.

The whole table lives in ``data/table_e1_1.json`` with its edition recorded;
this module only loads it and answers "which row governs this tag", including
the repeating groups (curves 50xx, overlays 60xx) and private attributes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from dicomvault.deid.options import OPTION_CODES, Option

#: PS3.15 E.1.1 action codes, single and compound.
ACTION_CODES = frozenset({"D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"})


@dataclass(frozen=True)
class TableRow:
    """One row of Table E.1-1: the basic action and the override of each option column."""

    tag: str
    keyword: str
    name: str
    basic: str
    options: Mapping[str, str]

    def action(self, options: Iterable[Option]) -> str:
        """The action under ``options``: option columns override the basic one; K wins over C."""
        overrides = {
            self.options[OPTION_CODES[o].value]
            for o in options
            if OPTION_CODES[o].value in self.options
        }
        if "K" in overrides:
            return "K"
        if "C" in overrides:
            return "C"
        return self.basic


@dataclass(frozen=True)
class ProfileTable:
    """Table E.1-1 indexed by tag; ``edition`` names the edition the data was taken from."""

    edition: str
    provenance: str
    rows: tuple[TableRow, ...]
    by_tag: Mapping[int, TableRow]
    curve_row: TableRow
    overlay_rows: Mapping[int, TableRow]
    private_row: TableRow

    def lookup(self, tag: int) -> TableRow | None:
        """The row governing ``tag`` (PS3.15 E.1-1), or ``None`` when the table does not list it."""
        row = self.by_tag.get(tag)
        if row is not None:
            return row
        group, elem = tag >> 16, tag & 0xFFFF
        if group & 1:
            return self.private_row if elem > 0x00FF else None
        if 0x5000 <= group <= 0x501E and not group & 1:
            return self.curve_row
        if 0x6000 <= group <= 0x601E and not group & 1:
            return self.overlay_rows.get(elem)
        return None


def _parse_tag(text: str) -> int | None:
    inner = text.strip("()").replace(",", "")
    try:
        return int(inner, 16)
    except ValueError:
        return None


@lru_cache(maxsize=1)
def load_table() -> ProfileTable:
    """Load the shipped Table E.1-1 (cached)."""
    raw = resources.files("dicomvault.deid").joinpath("data/table_e1_1.json").read_text("utf-8")
    doc = json.loads(raw)
    rows: list[TableRow] = []
    by_tag: dict[int, TableRow] = {}
    curve = private = None
    overlays: dict[int, TableRow] = {}
    for tag, keyword, name, basic, options in doc["rows"]:
        if basic not in ACTION_CODES or not set(options.values()) <= ACTION_CODES:
            raise ValueError(f"table row {tag}: unknown action code")
        row = TableRow(tag, keyword, name, basic, dict(options))
        rows.append(row)
        number = _parse_tag(tag)
        if number is not None:
            by_tag[number] = row
        elif tag.startswith("(50xx"):
            curve = row
        elif tag.startswith("(60xx"):
            overlays[int(tag[6:10], 16)] = row
        else:
            private = row
    if curve is None or private is None or not overlays:
        raise ValueError("table E.1-1 data is missing its repeating-group or private rows")
    return ProfileTable(doc["edition"], doc["provenance"], tuple(rows), by_tag, curve,
                        overlays, private)
