"""Part-10 framing and header validation for ingest (PS3.10 7.1, PS3.5 7).

The archive stores each instance as a PS3.10 file whose dataset bytes are
exactly what was received (over DIMSE or in a STOW part): only the preamble
is zeroed (a malicious preamble is neutralised) and, for DIMSE, a file meta
group is built.  Validation parses the header with pydicom (large values
deferred) and checks the keys the index needs, without keeping pixels.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID

from dicomvault.errors import InvalidInputError

IMPLEMENTATION_CLASS_UID = "2.25.9486403504712496781444937227495328647"  # 2.25 UUID-derived root (PS3.5 B.2)
IMPLEMENTATION_VERSION = "DICOMVAULT_010"
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_PREAMBLE = b"\x00" * 128


def valid_uid(value: object) -> bool:
    """PS3.5 9.1: digits and dots, no leading zeros in components, at most 64 chars."""
    return isinstance(value, str) and 0 < len(value) <= 64 and bool(_UID_RE.match(value))


@dataclass(frozen=True)
class ParsedInstance:
    """What ingest needs from one instance, plus its bytes."""

    dataset: Dataset  # header only (pixel data and large values deferred)
    transfer_syntax_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    dataset_bytes: bytes  # exactly as received, without preamble/meta
    part10: bytes  # zeroed preamble + meta + dataset_bytes


_LONG_VRS = frozenset((b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"))


def _scan_meta(data: bytes) -> tuple[int, str]:
    """(offset after the file meta group, its Transfer Syntax UID or "") of a PS3.10 file.

    The group is Explicit VR Little Endian (PS3.10 7.1); walking it by hand costs
    a fraction of pydicom's reader, on every STOW part and every transcode.
    """
    pos = 132
    transfer_syntax = ""
    size = len(data)
    while pos + 8 <= size:
        group, element = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            return pos, transfer_syntax
        if data[pos + 4 : pos + 6] in _LONG_VRS:
            if pos + 12 > size:
                break
            start = pos + 12
            length = struct.unpack_from("<I", data, pos + 8)[0]
        else:
            start = pos + 8
            length = struct.unpack_from("<H", data, pos + 6)[0]
        if element == 0x0010 and start + length <= size:
            transfer_syntax = data[start : start + length].decode("ascii", "replace").rstrip("\x00 ")
        pos = start + length
    raise InvalidInputError("file meta information is truncated")


#: PS3.5 7.1.2: explicit VRs with a 4-byte length (those of ``_LONG_VRS`` and the 64-bit ones).
_DATASET_LONG_VRS = _LONG_VRS | {b"SV", b"UV"}
_UNDEFINED_LENGTH = 0xFFFFFFFF
#: PS3.5 6.2: every VR; anything else where an explicit VR belongs means the data set is
#: not what its transfer syntax says (pydicom then guesses: leave it to pydicom).
_VRS = frozenset(vr.encode() for vr in (
    "AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL "
    "UN UR US UT UV").split())


def scan_leading_uids(data: bytes, implicit_vr: bool, last_tag: int,
                      wanted: tuple[int, ...]) -> dict[int, str] | None:
    """Values of the ``wanted`` UI elements among a Little Endian data set's first
    elements, up to ``last_tag`` (PS3.5 7.1), read without pydicom.

    Returns ``None`` where a hand walk is not exact (an undefined length, a value
    past the end, a multi-valued or non-ASCII UID): the caller then uses pydicom.
    """
    found: dict[int, str] = {}
    pos, size = 0, len(data)
    while pos + 8 <= size:
        group, element = struct.unpack_from("<HH", data, pos)
        tag = group << 16 | element
        if tag > last_tag:
            break
        if implicit_vr:
            start, length = pos + 8, struct.unpack_from("<I", data, pos + 4)[0]
        else:
            vr = data[pos + 4: pos + 6]
            if vr not in _VRS:
                return None
            if vr in _DATASET_LONG_VRS:
                if pos + 12 > size:
                    return None
                start, length = pos + 12, struct.unpack_from("<I", data, pos + 8)[0]
            else:
                start, length = pos + 8, struct.unpack_from("<H", data, pos + 6)[0]
        if length == _UNDEFINED_LENGTH or start + length > size:
            return None
        if tag in wanted:
            raw = data[start: start + length]
            if b"\\" in raw or not raw.isascii():
                return None
            found[tag] = raw.decode("ascii").strip("\x00 ")
        pos = start + length
    return found


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    """One group-0002 element in Explicit VR Little Endian (PS3.5 7.1.2), padded to even length."""
    if len(value) % 2:
        value += b"\0" if vr == b"UI" else b" "
    if vr == b"OB":
        return struct.pack("<HH2sHI", 0x0002, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def build_file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str,
                    source_ae: str | None = None) -> bytes:
    """Encode a PS3.10 7.1 file meta group for a dataset received over the network.

    Written directly (the same bytes as pydicom's ``write_file_meta_info``; a
    unit test compares them): it runs once per stored instance.
    """
    body = b"".join((
        _meta_element(0x0001, b"OB", b"\x00\x01"),
        _meta_element(0x0002, b"UI", sop_class_uid.encode("ascii")),
        _meta_element(0x0003, b"UI", sop_instance_uid.encode("ascii")),
        _meta_element(0x0010, b"UI", transfer_syntax_uid.encode("ascii")),
        _meta_element(0x0012, b"UI", IMPLEMENTATION_CLASS_UID.encode("ascii")),
        _meta_element(0x0013, b"SH", IMPLEMENTATION_VERSION.encode("ascii")),
        _meta_element(0x0016, b"AE", source_ae.encode("ascii", "replace")) if source_ae else b"",
    ))
    group_length = _meta_element(0x0000, b"UL", struct.pack("<I", len(body)))
    return _PREAMBLE + b"DICM" + group_length + body


def _parse(dataset_bytes: bytes, transfer_syntax_uid: str) -> Dataset:
    ts = UID(transfer_syntax_uid)
    if not ts.is_transfer_syntax:
        raise InvalidInputError("unknown transfer syntax")
    stream = io.BytesIO(dataset_bytes)
    try:
        if ts.is_deflated:
            import zlib

            stream = io.BytesIO(zlib.decompress(dataset_bytes, -zlib.MAX_WBITS))
        ds = pydicom.filereader.read_dataset(stream, ts.is_implicit_VR, ts.is_little_endian)
        _check_consumed(stream)
        _check_truncation(ds)
    except InvalidInputError:
        raise
    except Exception:  # noqa: BLE001 - any parser failure is a malformed dataset
        raise InvalidInputError("the dataset could not be parsed (malformed or truncated)") from None
    return ds


def _check_consumed(stream: io.BytesIO) -> None:
    # pydicom stops quietly at a short element; a stream that ends inside an
    # element or leaves trailing garbage means the object is damaged.
    pos = stream.tell()
    end = len(stream.getbuffer())
    if pos < end and end - pos >= 8:
        raise InvalidInputError("unparsed bytes after the dataset (malformed or truncated)")


def _check_truncation(ds: Dataset) -> None:
    # pydicom reads a short final element without complaint: compare the
    # declared length of each raw element with the bytes actually present.
    for tag in ds.keys():
        raw = ds.get_item(tag)
        length = getattr(raw, "length", None)
        value = getattr(raw, "value", None)
        if (isinstance(value, bytes) and length is not None and length != 0xFFFFFFFF
                and len(value) < length):
            raise InvalidInputError("the dataset is truncated")


def _check_pixels(ds: Dataset, ts: UID, dataset_bytes: bytes) -> None:
    if "PixelData" not in ds or ts.is_compressed:
        return
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsAllocated)
        samples = int(ds.get("SamplesPerPixel", 1))
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        raise InvalidInputError("image pixel module attributes missing or invalid") from None
    expected = rows * cols * samples * frames * bits // 8
    if str(ds.get("PhotometricInterpretation", "")).startswith("YBR_FULL_422"):
        expected = expected * 2 // 3  # 4:2:2 subsampling (PS3.3 C.7.6.3.1.2)
    raw = ds.get_item("PixelData")
    length = raw.length if raw is not None and hasattr(raw, "length") else None
    if length is not None and length != 0xFFFFFFFF and length < expected:
        raise InvalidInputError("pixel data is shorter than rows x columns x frames")


def parse_instance(data: bytes, *, dataset_transfer_syntax: str | None = None,
                   source_ae: str | None = None) -> ParsedInstance:
    """Validate one instance and frame it as PS3.10 (see module docstring)."""
    if dataset_transfer_syntax is None:
        if len(data) < 132 or data[128:132] != b"DICM":
            raise InvalidInputError("not a DICOM PS3.10 file (no DICM prefix)")
        end, ts = _scan_meta(data)
        if not valid_uid(ts):
            raise InvalidInputError("file meta has no valid TransferSyntaxUID")
        dataset_bytes = data[end:]
        part10 = _PREAMBLE + data[128:]
    else:
        ts = dataset_transfer_syntax
        dataset_bytes = data
        part10 = b""
    ds = _parse(dataset_bytes, ts)
    keys = {}
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = ds.get(keyword)
        value = str(value).strip("\x00 ") if value is not None else ""
        if not valid_uid(value):
            raise InvalidInputError(f"{keyword} missing or not a valid UID")
        keys[keyword] = value
    _check_pixels(ds, UID(ts), dataset_bytes)
    if not part10:
        part10 = build_file_meta(keys["SOPClassUID"], keys["SOPInstanceUID"], ts, source_ae) + data
    return ParsedInstance(
        dataset=ds,
        transfer_syntax_uid=ts,
        sop_class_uid=keys["SOPClassUID"],
        sop_instance_uid=keys["SOPInstanceUID"],
        study_uid=keys["StudyInstanceUID"],
        series_uid=keys["SeriesInstanceUID"],
        dataset_bytes=dataset_bytes,
        part10=part10,
    )


def split_part10(part10: bytes) -> tuple[str, bytes]:
    """(transfer syntax UID, dataset bytes) of a stored PS3.10 object."""
    end, transfer_syntax = _scan_meta(part10)
    return transfer_syntax, part10[end:]
