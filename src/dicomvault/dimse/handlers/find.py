"""C-FIND SCP (PS3.4 C.4.1, Patient Root and Study Root models).

The identifier becomes a ``FindQuery``: keys with a value are matching keys
(wildcards, ranges, UID lists passed through in DICOM string form), empty
keys are return keys (universal matching, PS3.4 C.2.2.2.3).  Matching is the
service's job; this module only translates.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from dicomvault.dimse import status
from dicomvault.dimse.handlers._common import dicom_string, principal_of, require_service
from dicomvault.errors import InvalidInputError
from dicomvault.services.types import FindQuery

FIND_MODELS = {
    str(PatientRootQueryRetrieveInformationModelFind): "PATIENT",
    str(StudyRootQueryRetrieveInformationModelFind): "STUDY",
}
LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
#: Identifier elements that are not matching/return keys.
_CONTROL_KEYWORDS = {"QueryRetrieveLevel", "SpecificCharacterSet", "TimezoneOffsetFromUTC"}


def translate_identifier(identifier: Dataset, model: str) -> FindQuery:
    """C-FIND identifier → ``FindQuery`` (PS3.4 C.4.1.2.1, C.2.2.2 matching types)."""
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    if level not in LEVELS or (model == "STUDY" and level == "PATIENT"):
        raise InvalidInputError("QueryRetrieveLevel missing or not valid for the model")
    filters: dict[str, str] = {}
    return_keys: list[str] = []
    for elem in identifier:
        keyword = elem.keyword
        if not keyword or keyword in _CONTROL_KEYWORDS or elem.tag.group in (0x0000, 0x0002):
            continue
        if elem.VR == "SQ" or isinstance(elem.value, Sequence):
            return_keys.append(keyword)  # sequence matching not supported: return only
            continue
        value = dicom_string(elem.value).strip()
        if value and value != "*":
            filters[keyword] = value
        else:
            return_keys.append(keyword)
    return FindQuery(level=level, model=model, filters=filters,  # type: ignore[arg-type]
                     return_keys=tuple(return_keys))


def row_dataset(row: dict[str, object], query: FindQuery, identifier: Dataset) -> Dataset:
    """One match as a response identifier holding exactly the requested keys."""
    ds = Dataset()
    wanted = [elem.keyword for elem in identifier
              if elem.keyword and elem.tag.group not in (0x0000, 0x0002)]
    non_ascii = False
    for keyword in wanted:
        if keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
            continue
        value = row.get(keyword)
        if value is None:
            value = "" if identifier[keyword].VR != "SQ" else []
        if isinstance(value, str) and not value.isascii():
            non_ascii = True
        try:
            setattr(ds, keyword, value)
        except (TypeError, ValueError):
            setattr(ds, keyword, None)
    ds.QueryRetrieveLevel = query.level
    if non_ascii:
        ds.SpecificCharacterSet = "ISO_IR 192"
    elif "SpecificCharacterSet" in identifier:
        ds.SpecificCharacterSet = identifier.SpecificCharacterSet
    return ds


def handle_find(event: Any, services: Any) -> Iterator[tuple[Any, Dataset | None]]:
    """Yield pending matches, then a final status (PS3.4 C.4.1.1.4)."""
    try:
        require_service(event.assoc, "find")
        principal = principal_of(event.assoc)
        model = FIND_MODELS.get(str(event.request.AffectedSOPClassUID))
        if model is None:
            raise InvalidInputError("unsupported query/retrieve information model")
        try:
            identifier = event.identifier
        except Exception:  # noqa: BLE001 - undecodable identifier
            raise InvalidInputError("identifier cannot be decoded") from None
        query = translate_identifier(identifier, model)
        result = services.archive.find(principal, query, door="dimse")
    except Exception as exc:  # noqa: BLE001 - every failure becomes a DIMSE status
        resolved = status.resolve(status.FIND_STATUS, exc)
        detail = getattr(exc, "detail", "") if resolved.code != status.PROCESSING_FAILURE else ""
        yield status.status_dataset(resolved, detail), None
        return
    for row in result.rows:
        if event.is_cancelled:
            yield 0xFE00, None
            return
        yield status.PENDING, row_dataset(row, query, identifier)
    if result.capped:
        shown = len(result.rows)
        yield status.status_dataset(
            status.FIND_CAPPED_WARNING, f"Result capped at {shown} matches; narrow the query"
        ), None
