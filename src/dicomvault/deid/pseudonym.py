"""Keyed, deterministic pseudonyms (PS3.15 E.3.9 "U" action, E.3.6 modified dates).

Everything here is a pure function of (pseudonym key, project, input value):
the same UID, patient or date maps to the same output in every run of a
project, and to unrelated outputs in another project.  UIDs are 2.25 UIDs
(PS3.5 B.2) built from an HMAC-SHA-256 of the original UID.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import date, timedelta

from dicomvault.errors import InvalidInputError

#: Dates move back by 1..10 years (whole days, so times of day are unchanged).
MIN_SHIFT_DAYS = 365
MAX_SHIFT_DAYS = 3650


@dataclass(frozen=True)
class MappingRecord:
    """One original → pseudonym pair, for the archive to store encrypted (or drop)."""

    kind: str  # "uid", "patient_id", "patient_name", "date_offset"
    original: str
    pseudonym: str


@dataclass(frozen=True)
class PseudonymKeys:
    """The pseudonym key of the keyring (32 bytes, HKDF sub-key ``dicomvault/v1/pseudonym``)."""

    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) < 32:
            raise InvalidInputError("the pseudonym key must be at least 32 bytes")


def _slug(project: str) -> str:
    text = re.sub(r"[^A-Z0-9]+", "", project.upper())
    return (text or "PROJECT")[:16]


class Pseudonymizer:
    """Keyed pseudonyms for one project; records each mapping it hands out."""

    def __init__(self, keys: PseudonymKeys | bytes, project: str, keep_mapping: bool = True):
        key = keys.key if isinstance(keys, PseudonymKeys) else PseudonymKeys(keys).key
        # A per-project key: outputs of two projects cannot be linked.
        self._key = hmac.new(key, b"dicomvault/v1/deid-project\0" + project.encode(),
                             hashlib.sha256).digest()
        self.project = project
        self.keep_mapping = keep_mapping
        self._records: dict[tuple[str, str], MappingRecord] = {}

    def _mac(self, kind: str, value: str) -> bytes:
        return hmac.new(self._key, kind.encode() + b"\0" + value.encode(), hashlib.sha256).digest()

    def _record(self, kind: str, original: str, pseudonym: str) -> str:
        if self.keep_mapping:
            self._records.setdefault((kind, original), MappingRecord(kind, original, pseudonym))
        return pseudonym

    @property
    def records(self) -> list[MappingRecord]:
        """The mappings handed out so far (empty when the project keeps none)."""
        return list(self._records.values())

    def uid(self, original: str) -> str:
        """A 2.25 UID (PS3.5 B.2) from the first 128 bits of the HMAC of ``original``."""
        value = original.strip().rstrip("\0")
        number = int.from_bytes(self._mac("uid", value)[:16], "big")
        return self._record("uid", value, f"2.25.{number}")

    def token(self, patient_key: str) -> str:
        """A 12-character base32 token for a patient (60 bits of the HMAC)."""
        mac = self._mac("patient", patient_key)
        return base64.b32encode(mac[:10]).decode()[:12]

    def patient_id(self, patient_key: str) -> str:
        """The project's Patient ID (0010,0020) for this patient: ``<PROJECT>-<token>``."""
        return self._record("patient_id", patient_key,
                            f"{_slug(self.project)}-{self.token(patient_key)}")

    def patient_name(self, patient_key: str, original: str) -> str:
        """The project's Patient's Name (0010,0010): ``<PROJECT>^<token>``."""
        return self._record("patient_name", original,
                            f"{_slug(self.project)}^{self.token(patient_key)}")

    def date_offset_days(self, patient_key: str) -> int:
        """The per-patient shift (negative days) for Modified Dates (PS3.15 E.3.6)."""
        span = MAX_SHIFT_DAYS - MIN_SHIFT_DAYS + 1
        days = -(MIN_SHIFT_DAYS + int.from_bytes(self._mac("date", patient_key)[:8], "big") % span)
        self._record("date_offset", patient_key, str(days))
        return days


def shift_date(value: str, days: int) -> str:
    """Shift a DA value (YYYYMMDD) by whole days; a value that does not parse becomes empty."""
    text = value.strip()
    if len(text) < 8 or not text[:8].isdigit():
        return ""
    try:
        moved = date(int(text[:4]), int(text[4:6]), int(text[6:8])) + timedelta(days=days)
    except (ValueError, OverflowError):
        return ""
    return moved.strftime("%Y%m%d")


def shift_datetime(value: str, days: int) -> str:
    """Shift the date part of a DT value, keeping time and UTC offset (PS3.5 6.2)."""
    text = value.strip()
    if len(text) < 8:
        return ""  # a year or year-month alone cannot be shifted by days
    moved = shift_date(text[:8], days)
    return moved + text[8:] if moved else ""
