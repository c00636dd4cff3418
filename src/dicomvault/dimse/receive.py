"""Incoming DIMSE messages without pydicom on the hot path (PS3.8 9.3.5, PS3.7 6.3, E.1).

pynetdicom turns every received P-DATA-TF into bytes five times over (the
PDU, its items, each value, the value minus its control header, a
``BytesIO``): a 0.5 MB C-STORE was copied about 3 MB in memory.  It then
decodes each command set into a pydicom ``Dataset`` and copies it element by
element onto the primitive: 0.35 ms of CPU per message on this project's
2-core machine, for a dozen bytes of integers and UIDs.

Here a P-DATA-TF's values are ``memoryview`` slices of the received PDU
(``pdata_from_pdu``), a message's data set is joined once, and the command
sets of the requests this server answers most (C-ECHO-RQ, C-STORE-RQ,
C-FIND-RQ) are read by ``decode_command``.  Anything else, and anything
unusual about these three (an element it does not know, a value of an
unexpected length, a multi-valued UID, fragments out of order, an event
handler that wants pynetdicom's message objects), goes through pynetdicom's
own decoding unchanged: the fast path only takes messages whose outcome it
can reproduce exactly (the tests compare both paths).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from io import BytesIO
from typing import Any, cast

from pynetdicom import _config, evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_STORE
from pynetdicom.pdu_primitives import P_DATA

#: PS3.8 9.3.5.1: message control header bits.
_COMMAND, _LAST = 0x01, 0x02
#: PS3.7 E.1: the command elements of the requests read here, by tag: (keyword, VR).
_ELEMENTS: dict[int, tuple[str, str]] = {
    0x00000000: ("CommandGroupLength", "UL"),
    0x00000002: ("AffectedSOPClassUID", "UI"),
    0x00000100: ("CommandField", "US"),
    0x00000110: ("MessageID", "US"),
    0x00000700: ("Priority", "US"),
    0x00000800: ("CommandDataSetType", "US"),
    0x00001000: ("AffectedSOPInstanceUID", "UI"),
    0x00001030: ("MoveOriginatorApplicationEntityTitle", "AE"),
    0x00001031: ("MoveOriginatorMessageID", "US"),
}
_SIZES = {"US": 2, "UL": 4}
#: PS3.7 E.1: CommandField of the requests decoded here → their primitive.
_REQUESTS: dict[int, type[Any]] = {0x0001: C_STORE, 0x0020: C_FIND, 0x0030: C_ECHO}
_DATASET_ATTRIBUTE = {C_STORE: "DataSet", C_FIND: "Identifier"}
#: PS3.7 E.2: CommandDataSetType "no data set".
_NO_DATASET = 0x0101
_ITEM = struct.Struct(">I")
_ELEMENT = struct.Struct("<HHI")


class PDataView:
    """A received P-DATA-TF whose values are views of the PDU (PS3.8 9.3.5)."""

    __slots__ = ("items",)

    def __init__(self, items: list[tuple[int, memoryview]]) -> None:
        self.items = items

    def to_primitive(self) -> P_DATA:
        """The P-DATA indication the state machine hands to DIMSE (PS3.8 9.2 DT-2/AR-6)."""
        primitive = P_DATA()
        # The setter insists on ``bytes`` values; views hold the same bytes without copying.
        primitive._presentation_data_value_list = self.items  # type: ignore[assignment]
        return primitive


def pdata_from_pdu(pdu: bytearray) -> PDataView | None:
    """Split a whole P-DATA-TF PDU (header included) into its PDV items (PS3.8 9.3.5.1).

    Returns ``None`` when the PDU is not one this function splits exactly as
    pynetdicom would (no items); raises ``ValueError`` for an item that does
    not fit the PDU, which the DUL answers as an invalid PDU (Evt19).
    """
    view = memoryview(pdu)
    end = len(pdu)
    offset = 6
    items: list[tuple[int, memoryview]] = []
    while offset < end:
        if offset + 4 > end:
            raise ValueError("truncated presentation data value item")
        (length,) = _ITEM.unpack_from(pdu, offset)
        if length < 2 or offset + 4 + length > end:
            raise ValueError("presentation data value item length does not fit the PDU")
        items.append((pdu[offset + 4], view[offset + 5: offset + 4 + length]))
        offset += 4 + length
    return PDataView(items) if items else None


def decode_command(command: bytes) -> dict[str, Any] | None:
    """Read a request's command set (Implicit VR Little Endian, PS3.7 6.3.1, E.1).

    Returns keyword → value for C-ECHO-RQ, C-STORE-RQ and C-FIND-RQ command
    sets holding only the elements of ``_ELEMENTS`` with single values, as
    pydicom would read them (UIDs and AE titles without their padding);
    ``None`` for anything else.
    """
    fields: dict[str, Any] = {}
    offset, end = 0, len(command)
    while offset < end:
        if offset + 8 > end:
            return None
        group, number, length = _ELEMENT.unpack_from(command, offset)
        offset += 8
        element = _ELEMENTS.get(group << 16 | number)
        if element is None or offset + length > end:
            return None
        keyword, vr = element
        raw = command[offset: offset + length]
        offset += length
        size = _SIZES.get(vr)
        if size is not None:
            if length != size:
                return None
            fields[keyword] = int.from_bytes(raw, "little")
            continue
        text = raw.decode("latin-1").rstrip(" \0")
        if "\\" in text or (vr == "AE" and not text.isascii()):
            return None
        fields[keyword] = text
    if _REQUESTS.get(fields.get("CommandField", -1)) is None:
        return None
    return fields


def _request_primitive(fields: dict[str, Any], context_id: int) -> Any:
    """The primitive pynetdicom's ``message_to_primitive`` builds from these fields."""
    primitive = _REQUESTS[fields["CommandField"]]()
    for keyword, value in fields.items():
        if hasattr(primitive, keyword):
            setattr(primitive, keyword, value)  # the setters validate, as for pynetdicom
    primitive._context_id = context_id
    primitive._dataset_path = None
    primitive._dataset_file = None
    return primitive


class ViewDimseProvider(DIMSEServiceProvider):
    """DIMSE provider that assembles messages from ``PDataView`` values (PS3.8 9.3.5, PS3.7 6.3).

    Per message it keeps the received PDVs; when the command set is complete
    it either reads it with ``decode_command`` or hands every PDV so far to
    pynetdicom's ``receive_primitive``, which then finishes that message.
    """

    _pdvs: list[tuple[int, Any]]
    _command: list[Any]
    _fields: dict[str, Any] | None
    _data: list[Any]
    _context_id: int

    @classmethod
    def install(cls, provider: DIMSEServiceProvider) -> None:
        """Make an association's DIMSE provider (pynetdicom's, not yet used) this one."""
        provider.__class__ = cls
        cast(ViewDimseProvider, provider)._start()

    def _start(self) -> None:
        self._pdvs, self._command, self._fields, self._data = [], [], None, []
        self._context_id = 0

    def receive_primitive(self, primitive: P_DATA) -> None:
        """Process a P-DATA indication (PS3.7 8.1, PS3.8 9.3.5); complete messages are queued."""
        items: Sequence[tuple[int, Any]] = primitive.presentation_data_value_list
        for index, (context_id, value) in enumerate(items):
            if self.message is not None:  # pynetdicom is finishing this message
                rest = P_DATA()
                rest._presentation_data_value_list = list(items[index:])
                super().receive_primitive(rest)
                if self.message is not None:
                    return
                continue
            self._take(context_id, value)

    def _take(self, context_id: int, value: Any) -> None:
        self._pdvs.append((context_id, value))
        control = value[0]
        if control & _COMMAND:
            if self._fields is not None or self._data:
                self._hand_over()  # a command fragment where data was due: pynetdicom's rules
                return
            self._command.append(value[1:])
            if not control & _LAST:
                return
            self._context_id = context_id
            fields = None
            if (not _config.STORE_RECV_CHUNKED_DATASET
                    and not self.assoc.get_handlers(evt.EVT_DIMSE_RECV)):
                fields = decode_command(b"".join(self._command))
            if fields is None:
                self._hand_over()
                return
            self._fields = fields
            if fields.get("CommandDataSetType") == _NO_DATASET:
                self._finish(None)
            return
        if self._fields is None:
            self._hand_over()  # data before its command set
            return
        self._data.append(value[1:])
        if control & _LAST:
            self._finish(b"".join(self._data))

    def _finish(self, data: bytes | None) -> None:
        fields, context_id = self._fields, self._context_id
        assert fields is not None
        try:
            request = _request_primitive(fields, context_id)
        except Exception:  # noqa: BLE001 - pynetdicom reports an invalid message its own way
            self._hand_over()
            return
        dataset_attribute = _DATASET_ATTRIBUTE.get(type(request))
        if dataset_attribute is not None:
            setattr(request, dataset_attribute, BytesIO(data) if data is not None else None)
        self._start()
        self.msg_queue.put((context_id, request))

    def _hand_over(self) -> None:
        """Give this message's PDVs so far to pynetdicom, which decodes it as it always did."""
        pdvs = self._pdvs
        self._start()
        replay = P_DATA()
        replay._presentation_data_value_list = pdvs
        super().receive_primitive(replay)
