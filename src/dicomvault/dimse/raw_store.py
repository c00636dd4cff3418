"""Send a stored instance over C-STORE without decoding it (PS3.7 9.1.1, PS3.4 C.4.2/C.4.3).

C-GET and C-MOVE sub-operations must deliver the object byte-identical to
what was stored, so the encoded dataset bytes go out unchanged on a
presentation context whose transfer syntax is the stored one.  pynetdicom's
``send_c_store`` would re-encode a ``Dataset``; ``send_stored_instance``
builds the same C-STORE-RQ primitive with ``DataSet = BytesIO(raw bytes)``.
"""

from __future__ import annotations

import time
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.dimse_primitives import C_STORE


class StoredInstance(Dataset):
    """An instance to send as-is: identifying UIDs plus the raw encoded dataset.

    A ``Dataset`` subclass so pynetdicom's C-GET/C-MOVE machinery accepts it
    as a yielded sub-operation; it carries only SOP Class/Instance UIDs as
    elements (non-empty, which pynetdicom requires).
    """

    def __init__(self, sop_class_uid: str, sop_instance_uid: str,
                 transfer_syntax_uid: str, data: bytes) -> None:
        super().__init__()
        self.SOPClassUID = sop_class_uid
        self.SOPInstanceUID = sop_instance_uid
        object.__setattr__(self, "_dv_transfer_syntax", UID(transfer_syntax_uid))
        object.__setattr__(self, "_dv_data", data)

    @property
    def stored_transfer_syntax(self) -> UID:
        return object.__getattribute__(self, "_dv_transfer_syntax")  # type: ignore[no-any-return]

    @property
    def move_originator(self) -> str | None:
        """AE title of the C-MOVE requestor (PS3.7 9.1.1.1 Move Originator AE Title)."""
        return self.__dict__.get("_dv_move_originator")

    @move_originator.setter
    def move_originator(self, ae_title: str | None) -> None:
        object.__setattr__(self, "_dv_move_originator", ae_title)

    @property
    def sent_status(self) -> int | None:
        """The peer's C-STORE-RSP status once sent (None: not sent or no answer)."""
        return self.__dict__.get("_dv_sent_status")

    @property
    def stored_bytes(self) -> bytes:
        return object.__getattribute__(self, "_dv_data")  # type: ignore[no-any-return]


def send_stored_instance(
    assoc: Any,
    instance: StoredInstance,
    msg_id: int = 1,
    priority: int = 2,
    originator_aet: str | None = None,
    originator_id: int | None = None,
) -> Dataset:
    """C-STORE-RQ with the stored bytes on a context of the stored transfer syntax.

    Raises ``ValueError`` (from pynetdicom) when the peer accepted no context for
    that SOP class and transfer syntax: the sub-operation then counts as failed.
    Mirrors ``pynetdicom.Association.send_c_store`` (PS3.7 9.3.1.1).
    """
    if not assoc.is_established:
        raise RuntimeError("association not established")
    req = C_STORE()
    req.MessageID = msg_id
    req.Priority = priority
    # pynetdicom passes its own AE title here; PS3.7 9.1.1.1 wants the C-MOVE requestor's
    req.MoveOriginatorApplicationEntityTitle = (
        instance.move_originator or originator_aet if originator_aet is not None else None)
    req.MoveOriginatorMessageID = originator_id
    context = assoc._get_valid_context(
        instance.SOPClassUID, instance.stored_transfer_syntax, "scu", allow_conversion=False
    )
    req.AffectedSOPClassUID = instance.SOPClassUID
    req.AffectedSOPInstanceUID = instance.SOPInstanceUID
    req.DataSet = BytesIO(instance.stored_bytes)

    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.0001)
    try:
        assoc.dimse.send_msg(req, context.context_id)
        _, rsp = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    if rsp is None:
        assoc._handle_no_response()
        return Dataset()
    result: Dataset = assoc._check_received_status(rsp)
    object.__setattr__(instance, "_dv_sent_status", result.get("Status"))
    return result
