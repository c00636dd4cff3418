"""Which index attributes are encrypted, and how each is made searchable.

One table used by ingest (to write ciphertext + blind tokens) and by query
(to look tokens up and to decrypt results), so the two can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dicomvault.crypto.blind import normalise, normalise_person_name, person_name_words

Level = Literal["patient", "study", "series"]
MatchKind = Literal["id", "pn", "text", "date"]


@dataclass(frozen=True)
class PhiField:
    keyword: str
    level: Level
    column: str
    kind: MatchKind

    @property
    def token_field(self) -> str:
        return f"{self.level}.{self.keyword}"

    def normalise(self, value: str) -> str:
        """Matching form: PN and free text case-insensitive (PS3.4 C.2.2.2.1)."""
        if self.kind == "pn":
            return normalise_person_name(value)
        if self.kind == "text":
            return normalise(value, case_insensitive=True)
        return normalise(value)

    def words(self, value: str) -> list[str]:
        if self.kind in ("pn", "text"):
            return person_name_words(value) if self.kind == "pn" else [
                w for w in self.normalise(value).split() if w
            ]
        return []


PHI_FIELDS: tuple[PhiField, ...] = (
    PhiField("PatientID", "patient", "enc_patient_id", "id"),
    PhiField("IssuerOfPatientID", "patient", "enc_issuer", "id"),
    PhiField("PatientName", "patient", "enc_patient_name", "pn"),
    PhiField("PatientBirthDate", "patient", "enc_birth_date", "date"),
    PhiField("AccessionNumber", "study", "enc_accession", "id"),
    PhiField("StudyID", "study", "enc_study_id", "id"),
    PhiField("StudyDescription", "study", "enc_description", "text"),
    PhiField("ReferringPhysicianName", "study", "enc_referring", "pn"),
    PhiField("SeriesDescription", "series", "enc_description", "text"),
)
PHI_BY_KEYWORD = {f.keyword: f for f in PHI_FIELDS}


def metadata_aad(sop_instance_uid: str) -> bytes:
    """AAD of ``instances.enc_metadata``: bound to its column and instance."""
    return f"instances.enc_metadata:{sop_instance_uid}".encode()


def field_aad(field: PhiField, row_uid: str) -> str:
    """AAD binding a ciphertext to its column and row (no swapping between rows)."""
    return f"{field.token_field}:{row_uid}"
