"""DIMSE status tables: ``dicomvault.errors`` classes → status codes, per service.

Each table is data, resolved through the error class hierarchy (the most
specific class listed wins), headed by the part of the standard it follows.
Codes come with a short ErrorComment (0000,0902) that never holds PHI.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from dataclasses import dataclass

from pydicom.dataset import Dataset

from dicomvault import errors

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class DimseStatus:
    code: int
    comment: str


# Status codes used by the handlers -----------------------------------------
SUCCESS = 0x0000
PENDING = 0xFF00
#: PS3.7 C.4 general: Cancel (the SCU sent a C-CANCEL for the request).
CANCEL = 0xFE00
#: PS3.7 C.4 general: Refused: Not Authorized.
NOT_AUTHORIZED = 0x0124
#: PS3.7 C.4 general: Processing Failure (unexpected server error).
PROCESSING_FAILURE = 0x0110
#: PS3.4 B.2.3 C-STORE: Error: Data Set does not match SOP Class.
STORE_SOP_CLASS_MISMATCH = 0xA900
#: PS3.4 B.2.3 C-STORE: Cannot understand class; pynetdicom's code for a failed handler.
STORE_HANDLER_FAILED = 0xC211
#: PS3.4 B.2.3 C-STORE: Error: Cannot understand (unparsable or invalid dataset).
STORE_CANNOT_UNDERSTAND = 0xC000
#: PS3.4 B.2.3 C-STORE Cxxx "Cannot understand" class: a *different* object already holds
#: this SOP Instance UID.  A permanent error (an SCU must not retry as it would for the
#: A7xx "out of resources" class); the sub-code 0x11 is ours and stated in the conformance
#: statement.
STORE_DUPLICATE_REFUSED = 0xC011
#: PS3.4 B.2.3 C-STORE: Refused: Out of Resources.
OUT_OF_RESOURCES = 0xA700
#: PS3.4 C.4.1.1.4 C-FIND: Identifier does not match SOP Class.
FIND_BAD_IDENTIFIER = 0xA900
#: PS3.4 C.4.1.1.4 C-FIND: Unable to process.
FIND_UNABLE = 0xC000
#: PS3.7 C.3 warning class, used as the final C-FIND status when the result was capped.
FIND_CAPPED_WARNING = 0xB000
#: PS3.4 C.4.2.1.5 / C.4.3.1.4 C-MOVE / C-GET statuses.
MOVE_DESTINATION_UNKNOWN = 0xA801
RETRIEVE_UNABLE_TO_CALCULATE = 0xA701
RETRIEVE_SUBOPS_WARNING = 0xB000
RETRIEVE_BAD_IDENTIFIER = 0xA900
RETRIEVE_UNABLE = 0xC000

ErrorTable = dict[type[errors.DicomVaultError], DimseStatus]

#: C-STORE (PS3.4 B.2.3, PS3.7 C.4).
STORE_STATUS: ErrorTable = {
    errors.InvalidInputError: DimseStatus(STORE_CANNOT_UNDERSTAND, "Cannot understand data set"),
    errors.NotAuthenticatedError: DimseStatus(NOT_AUTHORIZED, "Refused: not authorized"),
    errors.ForbiddenError: DimseStatus(NOT_AUTHORIZED, "Refused: not authorized"),
    errors.ConflictError: DimseStatus(
        STORE_DUPLICATE_REFUSED, "Different object already stored under this UID"),
    errors.UnavailableError: DimseStatus(OUT_OF_RESOURCES, "Refused: out of resources"),
    errors.TamperedError: DimseStatus(OUT_OF_RESOURCES, "Refused: storage integrity failure"),
}

#: C-FIND (PS3.4 C.4.1.1.4).
FIND_STATUS: ErrorTable = {
    errors.InvalidInputError: DimseStatus(FIND_BAD_IDENTIFIER, "Identifier does not match"),
    errors.QueryTooBroadError: DimseStatus(OUT_OF_RESOURCES, "Query too broad; narrow it"),
    errors.NotAuthenticatedError: DimseStatus(NOT_AUTHORIZED, "Refused: not authorized"),
    errors.ForbiddenError: DimseStatus(NOT_AUTHORIZED, "Refused: not authorized"),
    errors.UnavailableError: DimseStatus(OUT_OF_RESOURCES, "Refused: out of resources"),
}

#: C-MOVE and C-GET (PS3.4 C.4.2.1.5, C.4.3.1.4).
RETRIEVE_STATUS: ErrorTable = {
    errors.InvalidInputError: DimseStatus(RETRIEVE_BAD_IDENTIFIER, "Identifier does not match"),
    errors.QueryTooBroadError: DimseStatus(
        RETRIEVE_UNABLE_TO_CALCULATE, "Retrieve too broad; narrow it"),
    errors.NotAuthenticatedError: DimseStatus(NOT_AUTHORIZED, "Refused: not authorized"),
    errors.ForbiddenError: DimseStatus(NOT_AUTHORIZED, "Refused: not authorized"),
    errors.UnavailableError: DimseStatus(
        RETRIEVE_UNABLE_TO_CALCULATE, "Refused: out of resources"),
}


def resolve(table: ErrorTable, exc: BaseException) -> DimseStatus:
    """Map an exception to a status through the class hierarchy (MRO order).

    Anything not in the table is unexpected: 0x0110 Processing Failure with an
    opaque incident id, logged with the exception type and stack frames but
    not its message (which might quote data set values).
    """
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]  # type: ignore[index]
    incident = uuid.uuid4().hex[:12]
    # the exception's message may quote data set values: log its type and frames only
    frames = "".join(traceback.format_tb(exc.__traceback__)) if exc.__traceback__ else ""
    LOG.error("DIMSE incident %s: unexpected %s\n%s", incident, type(exc).__name__, frames)
    return DimseStatus(PROCESSING_FAILURE, f"Processing failure, incident {incident}")


def status_dataset(status: DimseStatus | int, comment: str = "") -> Dataset:
    """A status Dataset (Status + ErrorComment, PS3.7 C.4) for a pynetdicom handler."""
    ds = Dataset()
    if isinstance(status, DimseStatus):
        ds.Status = status.code
        comment = comment or status.comment
    else:
        ds.Status = status
    if comment:
        ds.ErrorComment = comment[:64]
    return ds
