"""Patient / study / series / instance index (PS3.4 C.6 query levels).

Identifying attributes (names, IDs, birth date, accession number, study ID,
free-text descriptions, referring physician) are stored only as AES-GCM
ciphertext under the patient's DEK (``enc_*`` columns) and searched through
``SearchToken`` blind-index rows.  Non-identifying matching keys (UIDs, dates
and times, modality, sex, numbers, SOP class, transfer syntax) are plain
columns so ranges and sorting work in SQL.  Study dates are kept in clear to
support date-range matching; this is a documented choice (docs/security.md).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from dicomvault.index.base import Base, UtcDateTime, utcnow

UID = String(64)


class Patient(Base):
    """One patient: owner of a DEK (crypto-shredding erases ``wrapped_dek``)."""

    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: Public, non-identifying id of this patient's key (audit, policy, logs).
    key_id: Mapped[str] = mapped_column(String(36), unique=True)
    #: Blind token of (issuer, patient id) — or of name+birth date when no ID.
    identity_token: Mapped[str] = mapped_column(String(32), unique=True)
    #: DEK wrapped by the KEK (``WrappedKey.to_str``); NULL once erased.
    wrapped_dek: Mapped[str | None] = mapped_column(Text)
    enc_patient_id: Mapped[bytes | None] = mapped_column(LargeBinary)
    enc_issuer: Mapped[bytes | None] = mapped_column(LargeBinary)
    enc_patient_name: Mapped[bytes | None] = mapped_column(LargeBinary)
    enc_birth_date: Mapped[bytes | None] = mapped_column(LargeBinary)
    sex: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    erased_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    studies: Mapped[list[Study]] = relationship(back_populates="patient")


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    study_uid: Mapped[str] = mapped_column(UID, unique=True)
    study_date: Mapped[str | None] = mapped_column(String(8), index=True)
    study_time: Mapped[str | None] = mapped_column(String(16))
    enc_accession: Mapped[bytes | None] = mapped_column(LargeBinary)
    enc_study_id: Mapped[bytes | None] = mapped_column(LargeBinary)
    enc_description: Mapped[bytes | None] = mapped_column(LargeBinary)
    enc_referring: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: Backslash-joined distinct modalities of the study's series.
    modalities: Mapped[str] = mapped_column(String(128), default="")
    num_series: Mapped[int] = mapped_column(Integer, default=0)
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    #: Set on de-identified collections (research projects).
    deidentified: Mapped[bool] = mapped_column(Boolean, default=False)
    project: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study")


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    series_uid: Mapped[str] = mapped_column(UID, unique=True)
    modality: Mapped[str | None] = mapped_column(String(16), index=True)
    series_number: Mapped[int | None] = mapped_column(Integer)
    series_date: Mapped[str | None] = mapped_column(String(8))
    series_time: Mapped[str | None] = mapped_column(String(16))
    body_part: Mapped[str | None] = mapped_column(String(64))
    enc_description: Mapped[bytes | None] = mapped_column(LargeBinary)
    num_instances: Mapped[int] = mapped_column(Integer, default=0)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    sop_uid: Mapped[str] = mapped_column(UID, unique=True)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    instance_number: Mapped[int | None] = mapped_column(Integer)
    number_of_frames: Mapped[int] = mapped_column(Integer, default=1)
    rows: Mapped[int | None] = mapped_column(Integer)
    columns: Mapped[int | None] = mapped_column(Integer)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    #: Location of the encrypted envelope in the blob store.
    blob_key: Mapped[str] = mapped_column(String(128), unique=True)
    #: Size of the plaintext Part-10 object.
    size: Mapped[int] = mapped_column(BigInteger)
    #: SHA-256 of the stored ciphertext (fixity checks).
    blob_sha256: Mapped[str] = mapped_column(String(64))
    #: Keyed HMAC of the plaintext dataset, on rows stored by earlier versions; "" on
    #: newer rows, whose duplicates are compared with the decrypted stored object.
    content_mac: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    #: The instance's WADO-RS metadata (PS3.18 F.2 JSON), sealed under the patient DEK,
    #: written with the row (never stale); NULL for rows stored before revision 0002.
    enc_metadata: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)

    series: Mapped[Series] = relationship(back_populates="instances")


class SearchToken(Base):
    """Blind-index token → row (level = patient|study|series)."""

    __tablename__ = "search_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token: Mapped[str] = mapped_column(String(32))
    level: Mapped[str] = mapped_column(String(8))
    row_id: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_search_tokens_lookup", "token", "level", "row_id"),
        Index("ix_search_tokens_row", "level", "row_id"),
    )


class DeidMapping(Base):
    """Original → pseudonym pairs kept for authorised re-identification.

    The original value is sealed under the *source* patient's DEK, so erasing
    that patient also erases the mapping.  Projects that keep no mapping have
    no rows here.
    """

    __tablename__ = "deid_mappings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    pseudonym: Mapped[str] = mapped_column(String(128), index=True)
    patient_key_id: Mapped[str] = mapped_column(String(36), index=True)
    enc_original: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    __table_args__ = (Index("uq_deid_mapping", "project", "kind", "pseudonym", unique=True),)
