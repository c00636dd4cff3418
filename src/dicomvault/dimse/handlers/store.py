"""C-STORE SCP (PS3.4 B.2.3 Storage SCP behaviour, PS3.7 9.1.1).

The encoded dataset is handed to ``archive.ingest`` exactly as received with
the negotiated transfer syntax (no decode/re-encode).  The door checks only
what the DIMSE message itself promises: the dataset's SOP Class and Instance
UIDs must equal the request's Affected SOP Class/Instance UIDs (PS3.4 B.2.3
0xA900 "Data Set does not match SOP Class").
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from io import BytesIO
from types import SimpleNamespace
from typing import Any

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID

from dicomvault.dimse import status
from dicomvault.dimse.handlers._common import principal_of, require_service
from dicomvault.dimse.wire import C_STORE_RSP, message_pdus, response_command, send_pdus
from dicomvault.errors import InvalidInputError
from dicomvault.services.dicomfile import scan_leading_uids

LOG = logging.getLogger(__name__)

_SOP_CLASS_TAG = 0x00080016
_SOP_INSTANCE_TAG = 0x00080018
#: Inflated prefix read from a deflated dataset to find its SOP UIDs.
_DEFLATE_PREFIX = 1 << 16


class SopClassMismatchError(InvalidInputError):
    """The data set's SOP Class UID differs from the C-STORE request's."""

    code = "sop-class-mismatch"


def dataset_sop_uids(data: bytes, transfer_syntax: str) -> tuple[str, str]:
    """(SOP Class UID, SOP Instance UID) read from the head of an encoded dataset."""
    ts = UID(transfer_syntax)
    if ts.is_little_endian and not ts.is_deflated:
        found = scan_leading_uids(data, ts.is_implicit_VR, _SOP_INSTANCE_TAG,
                                  (_SOP_CLASS_TAG, _SOP_INSTANCE_TAG))
        if found is not None:
            values = (found.get(_SOP_CLASS_TAG, ""), found.get(_SOP_INSTANCE_TAG, ""))
            if not all(values):
                raise InvalidInputError("data set lacks SOP Class or SOP Instance UID")
            return values
    return pydicom_sop_uids(data, ts)


def pydicom_sop_uids(data: bytes, ts: UID) -> tuple[str, str]:
    """``dataset_sop_uids`` through pydicom's reader: deflated or Big Endian data sets, and
    anything ``scan_leading_uids`` does not read exactly."""
    if ts.is_deflated:
        try:
            data = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data, _DEFLATE_PREFIX)
        except zlib.error:
            raise InvalidInputError("deflated data set cannot be inflated") from None
    try:
        head: Dataset = read_dataset(
            BytesIO(data), ts.is_implicit_VR, ts.is_little_endian,
            stop_when=lambda tag, vr, length: tag > _SOP_INSTANCE_TAG,
        )
        sop_class = head.get(_SOP_CLASS_TAG)
        sop_instance = head.get(_SOP_INSTANCE_TAG)
        values = (str(sop_class.value).strip("\0 ") if sop_class is not None else "",
                  str(sop_instance.value).strip("\0 ") if sop_instance is not None else "")
    except InvalidInputError:
        raise
    except Exception:  # noqa: BLE001 - any parser failure means "cannot understand"
        raise InvalidInputError("data set cannot be parsed") from None
    if not all(values):
        raise InvalidInputError("data set lacks SOP Class or SOP Instance UID")
    return values


def check_store_request(data: bytes, transfer_syntax: str, affected_class: str,
                        affected_instance: str) -> None:
    """PS3.4 B.2.3: the data set must match the request's SOP Class and Instance."""
    sop_class, sop_instance = dataset_sop_uids(data, transfer_syntax)
    if sop_class != str(affected_class).strip():
        raise SopClassMismatchError("data set SOP Class UID differs from the request")
    if sop_instance != str(affected_instance).strip():
        raise InvalidInputError("data set SOP Instance UID differs from the request")


def handle_store(event: Any, services: Any) -> Dataset:
    """Store one instance through ``archive.ingest`` and answer its status."""
    request = event.request
    try:
        require_service(event.assoc, "store")
        principal = principal_of(event.assoc)
        data = request.DataSet.getvalue()
        transfer_syntax = str(event.context.transfer_syntax)
        check_store_request(data, transfer_syntax, request.AffectedSOPClassUID,
                            request.AffectedSOPInstanceUID)
        peer = getattr(event.assoc, "dv_peer", None)
        result = services.archive.ingest(
            principal, data, door="dimse", dataset_transfer_syntax=transfer_syntax,
            source_ae=peer.ae_title if peer is not None else None)
    except SopClassMismatchError as exc:
        return status.status_dataset(status.STORE_SOP_CLASS_MISMATCH, exc.detail)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a DIMSE status
        resolved = status.resolve(status.STORE_STATUS, exc)
        detail = getattr(exc, "detail", "") if resolved.code != status.PROCESSING_FAILURE else ""
        return status.status_dataset(resolved, detail)
    if getattr(result, "warning", ""):
        return status.status_dataset(0xB000, result.warning)  # PS3.4 B.2.3 coercion warning
    return status.status_dataset(status.SUCCESS)


def serve_store(assoc: Any, request: Any, context: Any,
                handler: Callable[[Any], Dataset]) -> bool:
    """C-STORE SCP: run ``handler`` and write its C-STORE-RSP directly (PS3.7 9.3.1.2).

    Replaces pynetdicom's storage service, whose response went through pydicom's
    dataset encoding (about 0.8 ms per instance).  ``handler`` is ``handle_store``
    (with the metrics wrapper) and gets the event attributes it reads.  Returns
    ``False`` for a request left to pynetdicom: a SOP class other than the
    context's, or a dataset pynetdicom spooled to a file.
    """
    if (str(context.abstract_syntax) != str(request.AffectedSOPClassUID)
            or getattr(request, "_dataset_file", None) is not None):
        return False
    event = SimpleNamespace(assoc=assoc, request=request, context=context.as_tuple)
    try:
        outcome = handler(event)
        code = int(outcome.Status)
        comment = str(outcome.get("ErrorComment", "") or "")
    except Exception:  # noqa: BLE001 - as pynetdicom: a handler failure is 0xC211
        LOG.exception("C-STORE handler failed")
        code, comment = status.STORE_HANDLER_FAILED, ""
    if not comment.isascii():
        comment = ""
    command = response_command(C_STORE_RSP, str(request.AffectedSOPClassUID), request.MessageID,
                               code, sop_instance_uid=str(request.AffectedSOPInstanceUID),
                               error_comment=comment)
    send_pdus(assoc, message_pdus(int(context.context_id), command, None,
                                  assoc.dimse.maximum_pdu_size))
    return True
