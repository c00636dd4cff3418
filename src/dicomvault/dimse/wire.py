"""DIMSE response messages written as bytes, without building pydicom datasets.

C-FIND answers one message per match.  Through pydicom, each match became a
``Dataset`` (validated element by element), was written by ``write_dataset``,
and its command set went through the same machinery: about 1.5 ms of CPU per
match, most of a C-FIND's server time.  Here the response identifier is laid
out once per request (``IdentifierLayout``) and every match is written from the
index row in its order; the command set of a response is a fixed structure.

Only what this module can write exactly as pydicom would is written here:
Little Endian transfer syntaxes, the value representations of index columns,
values of the types the index returns.  ``IdentifierLayout.encode`` returns
``None`` for anything else and the caller falls back to pydicom, so the bytes
on the wire never depend on which path wrote them (tests compare both).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pynetdicom.pdu_primitives import P_DATA

from dicomvault.dimse.identifier import IdentifierKey, keys_of

#: PS3.5 7.1.2: value representations with a 2-byte reserved field and a 4-byte length.
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
#: Character-string VRs written from ``str`` values (PS3.5 6.2); UI pads with NUL.
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC",
                       "UI", "UR", "UT", "IS", "DS"})
_BINARY_INTS = {"US": "<H", "UL": "<I", "SS": "<h", "SL": "<i"}
_TAG_SPECIFIC_CHARACTER_SET = 0x00080005
_TAG_QUERY_RETRIEVE_LEVEL = 0x00080052
#: PS3.7 E.2: CommandDataSetType values.
_DATASET_PRESENT, _NO_DATASET = 0x0001, 0x0101
#: PS3.8 9.3.5.1: message control header bits (command / last fragment).
_COMMAND, _LAST = 0x01, 0x02


def _header(tag: int, vr: str, length: int, explicit: bool) -> bytes:
    """Element header, Little Endian (PS3.5 7.1.1 explicit, 7.1.2 implicit)."""
    tag_bytes = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if not explicit:
        return tag_bytes + struct.pack("<I", length)
    if vr in _LONG_VRS:
        return tag_bytes + vr.encode() + b"\0\0" + struct.pack("<I", length)
    if length > 0xFFFF:
        raise ValueError("value too long for its VR")
    return tag_bytes + vr.encode() + struct.pack("<H", length)


def _element(tag: int, vr: str, value: bytes, explicit: bool) -> bytes:
    return _header(tag, vr, len(value), explicit) + value


def _text(value: str, vr: str, codec: str) -> bytes:
    data = value.encode(codec)
    if len(data) % 2:
        data += b"\0" if vr == "UI" else b" "
    return data


class _Unsupported(Exception):
    """A value this module does not write exactly as pydicom would: use pydicom."""


def _value_bytes(vr: str, value: object, codec: str) -> bytes:
    if value is None or value == "" or value == []:
        return b""
    if vr == "SQ":
        raise _Unsupported
    items: Sequence[object] = value if isinstance(value, list) else [value]
    if vr in _BINARY_INTS:
        if not all(type(v) is int for v in items):
            raise _Unsupported
        return b"".join(struct.pack(_BINARY_INTS[vr], v) for v in items)
    texts: list[str] = []
    for v in items:
        if type(v) is int and vr == "IS":
            texts.append(str(v))
        elif type(v) is str and vr not in ("IS", "DS"):
            texts.append(v)
        else:  # numbers as strings and other types: pydicom validates and may rewrite them
            raise _Unsupported
    if isinstance(value, list) and any(not t.isascii() for t in texts):
        raise _Unsupported
    return _text("\\".join(texts), vr, codec)


class IdentifierLayout:
    """A C-FIND response identifier's elements in tag order (PS3.4 C.4.1.2.2 response keys).

    Holds exactly the keys of the request identifier (what ``row_dataset`` returns),
    with Query/Retrieve Level and, when needed, Specific Character Set (PS3.5 6.1.2.3).
    """

    def __init__(self, identifier: Dataset | Iterable[IdentifierKey], level: str) -> None:
        self.level = level
        #: (tag, keyword, VR) of every key taken from the row.
        self.keys: list[tuple[int, str, str]] = []
        self.supported = True
        self._request_charset: str | None = None
        for key in keys_of(identifier):
            if key.keyword == "SpecificCharacterSet":
                self._request_charset = key.text
            if not key.keyword or key.tag >> 16 in (0x0000, 0x0002):
                continue
            if key.keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
                continue
            vr = dictionary_VR(key.tag)
            if (vr not in _TEXT_VRS and vr not in _BINARY_INTS and vr != "SQ"
                    or (key.vr == "SQ") != (vr == "SQ")):
                self.supported = False
            self.keys.append((key.tag, key.keyword, vr))

    def encode(self, row: Mapping[str, object], explicit: bool) -> bytes | None:
        """The identifier of one match (PS3.5 7.1), or ``None`` where pydicom must write it."""
        if not self.supported:
            return None
        non_ascii = any(isinstance(v, str) and not v.isascii()
                        for v in (row.get(keyword) for _, keyword, _ in self.keys))
        codec = "utf-8" if non_ascii else "ascii"
        charset = "ISO_IR 192" if non_ascii else self._request_charset
        parts: list[tuple[int, bytes]] = [
            (_TAG_QUERY_RETRIEVE_LEVEL, _element(_TAG_QUERY_RETRIEVE_LEVEL, "CS",
                                                 _text(self.level, "CS", "ascii"), explicit)),
        ]
        if charset is not None:
            parts.append((_TAG_SPECIFIC_CHARACTER_SET,
                          _element(_TAG_SPECIFIC_CHARACTER_SET, "CS",
                                   _text(charset, "CS", "ascii"), explicit)))
        try:
            for tag, keyword, vr in self.keys:
                value = row.get(keyword)
                if vr == "SQ":
                    if value not in (None, []):
                        return None
                    parts.append((tag, _header(tag, "SQ", 0, explicit)))
                    continue
                parts.append((tag, _element(tag, vr, _value_bytes(vr, value, codec), explicit)))
        except (_Unsupported, UnicodeEncodeError, ValueError, struct.error):
            return None
        parts.sort(key=lambda part: part[0])
        return b"".join(data for _, data in parts)


#: PS3.7 E.1 Command Field values of the responses written here.
C_STORE_RSP, C_FIND_RSP = 0x8001, 0x8020


def response_command(command_field: int, sop_class_uid: str, message_id: int, status: int, *,
                     has_dataset: bool = False, sop_instance_uid: str | None = None,
                     error_comment: str = "") -> bytes:
    """A DIMSE-C response command set, Implicit VR Little Endian (PS3.7 9.3, E.1).

    Elements in tag order: Affected SOP Class UID, Command Field, Message ID Being
    Responded To, Command Data Set Type, Status, Error Comment (when given, ASCII),
    Affected SOP Instance UID (when given; C-STORE-RSP, PS3.7 9.3.1.2).
    """
    parts = [
        _element(0x00000002, "UI", _text(sop_class_uid, "UI", "ascii"), False),
        _element(0x00000100, "US", struct.pack("<H", command_field), False),
        _element(0x00000120, "US", struct.pack("<H", message_id), False),
        _element(0x00000800, "US", struct.pack("<H", _DATASET_PRESENT if has_dataset
                                                 else _NO_DATASET), False),
        _element(0x00000900, "US", struct.pack("<H", status), False),
    ]
    if error_comment:
        parts.append(_element(0x00000902, "LO", _text(error_comment, "LO", "ascii"), False))
    if sop_instance_uid is not None:
        parts.append(_element(0x00001000, "UI", _text(sop_instance_uid, "UI", "ascii"), False))
    body = b"".join(parts)
    return _element(0x00000000, "UL", struct.pack("<I", len(body)), False) + body


def _fragments(data: bytes, room: int) -> Iterator[tuple[bytes, bool]]:
    if room <= 0:
        yield data, True
        return
    for start in range(0, max(len(data), 1), room):
        chunk = data[start:start + room]
        yield chunk, start + room >= len(data)


def message_pdus(context_id: int, command: bytes, dataset: bytes | None,
                 max_pdu: int) -> list[P_DATA]:
    """P-DATA requests carrying one message (PS3.8 9.3.5, PS3.7 6.3.1).

    A small message goes in one P-DATA-TF with a command PDV and a data PDV (one
    write instead of two); a large one is fragmented to the peer's maximum PDU
    length, every PDV in its own P-DATA as pynetdicom does.
    """
    whole = 6 + len(command) + (6 + len(dataset) if dataset is not None else 0)
    if max_pdu == 0 or whole <= max_pdu:
        pdata = P_DATA()
        pdata.presentation_data_value_list.append((context_id, bytes([_COMMAND | _LAST]) + command))
        if dataset is not None:
            pdata.presentation_data_value_list.append((context_id, bytes([_LAST]) + dataset))
        return [pdata]
    out: list[P_DATA] = []
    room = max_pdu - 6
    for payload, flag in ((command, _COMMAND), (dataset, 0)):
        if payload is None:
            continue
        for chunk, last in _fragments(payload, room):
            pdata = P_DATA()
            pdata.presentation_data_value_list.append(
                (context_id, bytes([flag | (_LAST if last else 0)]) + chunk))
            out.append(pdata)
    return out


def send_pdus(assoc: Any, pdus: list[P_DATA]) -> None:
    """Queue P-DATA requests to the association's DUL, which writes them in order."""
    for pdata in pdus:
        assoc.dul.send_pdu(pdata)
