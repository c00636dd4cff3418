"""The identifying values of an input dataset, and a matcher for them.

Used twice: by the Clean actions (to scrub those values out of free text) and
by the verification pass (to find any that survived, PS3.15 E.1.1 "shall not
be present").  *Strong* identifiers (person names and their parts, patient
module values, identifiers, dates, UIDs) are always searched for; a *weak*
one (a description) that an attribute the configuration keeps also carries is
not identifying for this run (e.g. ``CHEST`` in a kept Body Part Examined).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.multival import MultiValue
from pydicom.uid import UID_dictionary

TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST",
                      "TM", "UC", "UR", "UT", "UI"})
MIN_LENGTH = 3


def split_values(value: object) -> list[str]:
    """The string values of an element value (multi-valued, PN components)."""
    items = value if isinstance(value, list | tuple | MultiValue) else [value]
    out: list[str] = []
    for item in items:
        if item is None:
            continue
        text = str(item).strip().rstrip("\0")
        if text:
            out.append(text)
    return out


def _variants(text: str, vr: str) -> list[str]:
    found = [text]
    if vr == "PN":
        found += [p for p in re.split(r"[\^=]", text) if p.strip()]
        found.append(" ".join(p for p in re.split(r"[\^=]", text) if p.strip()))
    if vr in ("DA", "DT") and len(text) >= 8 and text[:8].isdigit():
        d = text[:8]
        found += [d, f"{d[:4]}-{d[4:6]}-{d[6:8]}", f"{d[6:8]}/{d[4:6]}/{d[:4]}",
                  f"{d[4:6]}/{d[6:8]}/{d[:4]}", f"{d[6:8]}.{d[4:6]}.{d[:4]}"]
    return [f.strip() for f in found if len(f.strip()) >= MIN_LENGTH]


@dataclass
class IdentifierSet:
    """Identifying strings collected from an input, minus those the output may keep."""

    values: set[str] = field(default_factory=set)
    strong: set[str] = field(default_factory=set)
    uids: set[str] = field(default_factory=set)
    kept: set[str] = field(default_factory=set)
    #: Whole values of kept coded entries (controlled vocabulary, never PHI).
    kept_codes: set[str] = field(default_factory=set)
    #: Dates (YYYYMMDD) that kept date attributes carry, and the date behind each variant.
    kept_dates: set[str] = field(default_factory=set)
    date_of: dict[str, str] = field(default_factory=dict)
    #: Values this run generated (pseudonyms): never residues, whatever they contain.
    generated: set[str] = field(default_factory=set)
    _pattern: re.Pattern[str] | None = None

    def add(self, value: object, vr: str, strong: bool = False) -> None:
        """Record an identifying value; ``strong`` ones survive the kept-value exclusion."""
        for text in split_values(value):
            if vr == "UI":
                if text not in UID_dictionary:
                    self.uids.add(text)
            elif vr in TEXT_VRS:
                found = {v.upper() for v in _variants(text, vr)}
                self.values.update(found)
                if vr in ("DA", "DT") and len(text) >= 8:
                    self.date_of.update({v: text[:8] for v in found})
                if strong or vr in ("PN", "DA", "DT"):
                    self.strong.update(found)

    def keep(self, value: object, coded: bool = False, vr: str = "") -> None:
        texts = {t.upper() for t in split_values(value)}
        self.kept.update(texts)
        if vr in ("DA", "DT"):
            self.kept_dates.update(t[:8] for t in texts if len(t) >= 8)
        if coded:
            self.kept_codes.update(texts)

    def finalize(self) -> None:
        """Drop values that kept attributes also carry; compile the matcher."""
        kept_blob = "\n".join(self.kept)
        self.values = {v for v in self.values
                       if (v in self.strong or (v not in self.kept and v not in kept_blob))
                       and v not in self.kept_codes and not (v.isdigit() and len(v) < 4)
                       and self.date_of.get(v) not in self.kept_dates}
        self.uids -= self.kept
        values = "|".join(re.escape(v) for v in sorted(self.values, key=len, reverse=True))
        uids = "|".join(re.escape(u) for u in sorted(self.uids, key=len, reverse=True))
        parts = ([rf"(?<![A-Z0-9])(?:{values})(?![A-Z0-9])"] if values else []) + \
            ([rf"(?<![0-9.])(?:{uids})(?![0-9.])"] if uids else [])
        self._pattern = re.compile("|".join(parts), re.IGNORECASE) if parts else None

    def search(self, text: str) -> bool:
        """Whether ``text`` contains any identifying value (token-bounded, case-insensitive)."""
        if text.strip().upper() in self.generated:
            return False
        return bool(self._pattern and self._pattern.search(text))

    def scrub(self, text: str) -> str:
        """``text`` with identifying values and date-like strings removed (Clean, E.3.5)."""
        if self._pattern is not None:
            text = self._pattern.sub("", text)
        text = _DATE_LIKE.sub("", text)
        return re.sub(r"\s{2,}", " ", text).strip()

    def tokens(self) -> set[str]:
        """Single-word identifying tokens (for matching OCR output)."""
        out: set[str] = set()
        for v in self.values:
            out.update(t for t in re.split(r"[^A-Z0-9]+", v) if len(t) >= 4 or
                       (len(t) >= MIN_LENGTH and not t.isdigit()))
        return out


_DATE_LIKE = re.compile(
    r"\b(?:(?:19|20)\d{2}[-./]?(?:0[1-9]|1[0-2])[-./]?(?:0[1-9]|[12]\d|3[01])"
    r"|(?:0?[1-9]|[12]\d|3[01])[./-](?:0?[1-9]|1[0-2])[./-](?:19|20)?\d{2})\b"
)


def words_match(words: Iterable[str], tokens: set[str]) -> bool:
    """Whether any OCR word equals (case-insensitively) an identifying token."""
    return any(re.sub(r"[^A-Z0-9]", "", w.upper()) in tokens for w in words)
