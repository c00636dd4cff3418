"""C-FIND SCP (PS3.4 C.4.1, Patient Root and Study Root models).

The identifier becomes a ``FindQuery``: keys with a value are matching keys
(wildcards, ranges, UID lists passed through in DICOM string form), empty
keys are return keys (universal matching, PS3.4 C.2.2.2.3).  Matching is the
service's job; this module only translates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import decode, encode
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from dicomvault.dimse import status
from dicomvault.dimse.handlers._common import principal_of, require_service
from dicomvault.dimse.identifier import IdentifierKey, keys_of, read_identifier
from dicomvault.dimse.wire import C_FIND_RSP, IdentifierLayout, message_pdus, response_command, send_pdus
from dicomvault.errors import InvalidInputError
from dicomvault.services.types import FindQuery, FindResult

FIND_MODELS = {
    str(PatientRootQueryRetrieveInformationModelFind): "PATIENT",
    str(StudyRootQueryRetrieveInformationModelFind): "STUDY",
}
LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
#: Identifier elements that are not matching/return keys.
_CONTROL_KEYWORDS = {"QueryRetrieveLevel", "SpecificCharacterSet", "TimezoneOffsetFromUTC"}


def translate_identifier(identifier: Dataset | Iterable[IdentifierKey], model: str) -> FindQuery:
    """C-FIND identifier → ``FindQuery`` (PS3.4 C.4.1.2.1, C.2.2.2 matching types)."""
    keys = keys_of(identifier)
    level = next((key.text for key in keys if key.keyword == "QueryRetrieveLevel"), "").strip().upper()
    if level not in LEVELS or (model == "STUDY" and level == "PATIENT"):
        raise InvalidInputError("QueryRetrieveLevel missing or not valid for the model")
    filters: dict[str, str] = {}
    return_keys: list[str] = []
    for key in keys:
        keyword = key.keyword
        if not keyword or keyword in _CONTROL_KEYWORDS or key.tag >> 16 in (0x0000, 0x0002):
            continue
        if key.vr == "SQ":
            return_keys.append(keyword)  # sequence matching not supported: return only
            continue
        value = key.text.strip()
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


def _query(assoc: Any, request: Any,
           decode_identifier: Callable[[], list[IdentifierKey]],
           services: Any) -> tuple[FindQuery, FindResult, list[IdentifierKey]]:
    """Check the peer may query, translate the identifier and run the search."""
    require_service(assoc, "find")
    principal = principal_of(assoc)
    model = FIND_MODELS.get(str(request.AffectedSOPClassUID))
    if model is None:
        raise InvalidInputError("unsupported query/retrieve information model")
    try:
        identifier = decode_identifier()
    except Exception:  # noqa: BLE001 - undecodable identifier
        raise InvalidInputError("identifier cannot be decoded") from None
    query = translate_identifier(identifier, model)
    return query, services.archive.find(principal, query, door="dimse"), identifier


def _send_status(assoc: Any, request: Any, context_id: int, code: int, comment: str = "") -> None:
    """A final response carrying a status other than Success (PS3.4 C.4.1.1.4)."""
    rsp = C_FIND()
    rsp.MessageIDBeingRespondedTo = request.MessageID
    rsp.AffectedSOPClassUID = request.AffectedSOPClassUID
    rsp.Status = code
    if comment:
        rsp.ErrorComment = comment[:64]  # type: ignore[assignment]
    assoc.dimse.send_msg(rsp, context_id)


def _cancelled(assoc: Any, message_id: int) -> bool:
    """A C-CANCEL-FIND-RQ arrived for this request (PS3.7 9.3.2.3)."""
    return assoc.dimse.cancel_req.pop(message_id, None) is not None


def serve_find(assoc: Any, request: Any, context: Any, services: Any) -> bool:
    """C-FIND SCP: pending responses, then a final status (PS3.4 C.4.1.1.4, PS3.7 9.1.2).

    Replaces pynetdicom's C-FIND service for the models of ``FIND_MODELS``: each
    match's response is written from its index row (``wire.py``), pydicom only
    where that module cannot.  A capped result ends with the Warning status
    (no Success after it).  Returns ``False`` for a request it does not serve.
    """
    uid = str(request.AffectedSOPClassUID)
    if uid not in FIND_MODELS or str(context.abstract_syntax) != uid:
        return False
    syntax = context.transfer_syntax[0]
    context_id = int(context.context_id)
    direct = syntax.is_little_endian and not syntax.is_deflated
    decoded: list[Dataset] = []

    def dataset() -> Dataset:
        if not decoded:
            decoded.append(decode(request.Identifier, syntax.is_implicit_VR, syntax.is_little_endian,
                                  syntax.is_deflated))
        return decoded[0]

    def identifier_keys() -> list[IdentifierKey]:
        stream = request.Identifier
        keys = (read_identifier(stream.getvalue(), explicit_vr=not syntax.is_implicit_VR)
                if direct and stream is not None else None)
        return keys_of(dataset()) if keys is None else keys

    try:
        query, result, identifier = _query(assoc, request, identifier_keys, services)
        layout = IdentifierLayout(identifier, query.level)
        for row in result.rows:
            if _cancelled(assoc, request.MessageID):
                _send_status(assoc, request, context_id, status.CANCEL)
                return True
            data = layout.encode(row, explicit=not syntax.is_implicit_VR) if direct else None
            if data is None:
                data = encode(row_dataset(row, query, dataset()), syntax.is_implicit_VR,
                              syntax.is_little_endian, syntax.is_deflated)
            if not data:
                _send_status(assoc, request, context_id, status.FIND_UNABLE)
                return True
            _respond(assoc, request, context_id, status.PENDING, data)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a DIMSE status
        resolved = status.resolve(status.FIND_STATUS, exc)
        detail = getattr(exc, "detail", "") if resolved.code != status.PROCESSING_FAILURE else ""
        _send_status(assoc, request, context_id, resolved.code, detail or resolved.comment)
        return True
    if result.capped:
        _send_status(assoc, request, context_id, status.FIND_CAPPED_WARNING,
                     f"Result capped at {len(result.rows)} matches; narrow the query")
    else:
        _respond(assoc, request, context_id, status.SUCCESS, None)
    return True


def _respond(assoc: Any, request: Any, context_id: int, code: int, data: bytes | None) -> None:
    command = response_command(C_FIND_RSP, str(request.AffectedSOPClassUID), request.MessageID,
                               code, has_dataset=data is not None)
    send_pdus(assoc, message_pdus(context_id, command, data, assoc.dimse.maximum_pdu_size))
