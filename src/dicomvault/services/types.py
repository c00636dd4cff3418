"""Protocol-neutral request/result types shared by every door.

C-FIND and QIDO-RS both become a ``FindQuery``; C-GET, C-MOVE and WADO-RS all
retrieve ``InstanceRef`` lists.  Doors only translate (STYLE.md: "two doors,
one implementation").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

QueryLevel = Literal["PATIENT", "STUDY", "SERIES", "IMAGE"]
QueryModel = Literal["PATIENT", "STUDY"]


@dataclass(frozen=True)
class FindQuery:
    """A search (PS3.4 C.6 / PS3.18 10.6).

    ``filters`` maps DICOM keywords to matching values in DICOM string form:
    ``"SMITH*"`` (wildcards ``*`` and ``?``), ``"20200101-20201231"`` (ranges),
    ``"1.2.3\\1.2.4"`` (UID lists), ``""`` (universal matching, i.e. return only).
    ``return_keys`` lists further keywords to return (``["*"]`` = all supported).
    """

    level: QueryLevel
    filters: dict[str, str] = field(default_factory=dict)
    return_keys: tuple[str, ...] = ()
    model: QueryModel = "STUDY"
    limit: int | None = None
    offset: int = 0
    fuzzy: bool = False


@dataclass
class FindResult:
    """Matches as ``{keyword: value}`` rows, values in DICOM string/int form.

    Multi-valued attributes (``ModalitiesInStudy``) are lists.  ``capped`` is
    set when ``limit`` or the server maximum cut the result (the door states
    it: DIMSE warning 0xB001-style / QIDO ``Warning`` header).
    """

    rows: list[dict[str, object]]
    capped: bool = False
    total_matched: int | None = None


@dataclass(frozen=True)
class InstanceRef:
    """A stored instance a retrieve may send."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    study_instance_uid: str
    series_instance_uid: str
    size: int
    #: internal: blob key and patient key id (never sent to clients)
    blob_key: str = ""
    patient_key_id: str = ""
    number_of_frames: int = 1
    #: internal: the patient's wrapped DEK as read by ``locate`` (saves a lookup per instance)
    wrapped_dek: str | None = None


@dataclass(frozen=True)
class IngestResult:
    """Outcome of storing one instance (PS3.4 B.2.3 semantics)."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    #: stored: new; duplicate: identical bytes already held (no second copy);
    #: overwritten: different bytes replaced the old (only if configured).
    status: Literal["stored", "duplicate", "overwritten"]
    #: Human-readable warning for the door (e.g. coercion), never PHI.
    warning: str = ""
    series_instance_uid: str = ""
