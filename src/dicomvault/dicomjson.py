"""The DICOM JSON Model (PS3.18 Annex F) for QIDO-RS results and WADO-RS metadata.

* ``dataset_to_json``: a dataset → JSON, binary values larger than
  ``BULK_THRESHOLD`` (and all encapsulated pixel data) as ``BulkDataURI``
  (F.2.6), smaller ones ``InlineBinary``.  Large elements are never decoded.
* ``row_to_json``: a ``FindResult`` row (keyword → value) → JSON (F.2.2).
* ``resolve_bulk_path``: a bulk data path (``7FE00010``, ``00540016/0/00181072``)
  → that element's bytes.
* ``encode_stored_metadata`` / ``render_stored_metadata``: an instance's
  metadata serialised once at ingest, with its BulkDataURIs completed for the
  requesting origin when served.
"""

from __future__ import annotations

import json
import re
import secrets
import struct
import zlib
from collections.abc import Callable
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_dict
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from dicomvault.errors import InvalidInputError, NotFoundError

BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
BULK_THRESHOLD = 1024
UNDEFINED_LENGTH = 0xFFFFFFFF
_INT_VRS = frozenset({"IS", "US", "UL", "SL", "SS", "UV", "SV"})
_FLOAT_VRS = frozenset({"DS", "FL", "FD"})
_BULK_PATH = re.compile(r"^[0-9A-Fa-f]{8}(/\d{1,6}/[0-9A-Fa-f]{8}){0,8}$")

BulkUri = Callable[[str], str]


def _vr(elem: DataElement | RawDataElement) -> str:
    if elem.VR:
        return str(elem.VR)
    try:
        return str(dictionary_VR(elem.tag))
    except KeyError:
        return "UN"


def _length(elem: DataElement | RawDataElement) -> int:
    if isinstance(elem, RawDataElement):
        return int(elem.length)
    value = elem.value
    return len(value) if isinstance(value, bytes | bytearray) else 0


_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UR", "UT", "UI"})
_SINGLE_VALUED = frozenset({"LT", "ST", "UT", "UR"})
_STRUCT = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "UV": "Q", "SV": "q"}
_CHARSET_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})


def _text_values(vr: str, raw: bytes) -> list[Any] | None:
    """PS3.18 F.2.3 values of a text VR from raw bytes; None when the slow path must decide."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None  # a specific character set applies: let pydicom decode it
    text = text.rstrip("\x00 ") if vr == "UI" else text.rstrip(" \x00")
    if not text:
        return []
    parts = [text] if vr in _SINGLE_VALUED else text.split("\\")
    if vr not in ("LT", "ST", "UT"):
        parts = [p.strip() for p in parts]
    values: list[Any] = []
    for part in parts:
        if not part:
            values.append(None)
        elif vr == "IS":
            values.append(int(part))
        elif vr == "DS":
            number = float(part)
            values.append(int(number) if number.is_integer() and "." not in part and "e" not in part.lower()
                          else number)
        else:
            values.append(part)
    return values


def _fast_element(elem: RawDataElement, vr: str) -> dict[str, Any] | None:
    """JSON for a little-endian raw element without pydicom value conversion; None = use pydicom."""
    raw = elem.value
    if raw is None or not elem.is_little_endian:
        return None
    try:
        if vr in _TEXT_VRS or vr in ("IS", "DS"):
            values = _text_values(vr, raw)
        elif vr == "PN":
            values = _text_values("PN", raw)
            if values is not None:
                values = [None if v is None else dict(zip(("Alphabetic", "Ideographic", "Phonetic"),
                                                          str(v).split("="), strict=False))
                          for v in values]
        elif vr in _STRUCT:
            fmt = _STRUCT[vr]
            size = struct.calcsize(fmt)
            if len(raw) % size:
                return None
            values = list(struct.unpack(f"<{len(raw) // size}{fmt}", raw))
        else:
            return None
    except ValueError:
        return None
    if values is None:
        return None
    return {"vr": vr, "Value": values} if values else {"vr": vr}


def dataset_to_json(ds: Dataset, bulk_uri: BulkUri | None, path: str = "") -> dict[str, Any]:
    """PS3.18 F.2: one dataset as a DICOM JSON object (tags in ascending order).

    Common VRs are converted straight from the raw little-endian bytes (ASCII
    text, binary numbers); everything else goes through pydicom.
    """
    out: dict[str, Any] = {}
    for elem in ds.elements():
        tag = Tag(elem.tag)
        if tag.element == 0:  # group lengths are not part of the JSON model
            continue
        key = f"{int(tag):08X}"
        vr = _vr(elem)
        if " or " in vr:  # ambiguous in the dictionary (implicit VR): pydicom's resolution
            try:
                vr = str(ds[tag].VR)
            except Exception:  # noqa: BLE001 - unresolvable: the first candidate
                vr = vr.split(" or ")[0]
            if " or " in vr:
                vr = vr.split(" or ")[0]
        here = f"{path}/{key}" if path else key
        if vr in BULK_VRS:
            length = _length(elem)
            if length == UNDEFINED_LENGTH or length > BULK_THRESHOLD or tag == 0x7FE00010:
                out[key] = {"vr": vr, "BulkDataURI": bulk_uri(here)} if bulk_uri else {"vr": vr}
                continue
        if isinstance(elem, RawDataElement) and vr != "SQ":
            fast = _fast_element(elem, vr)
            if fast is not None:
                out[key] = fast
                continue
        try:
            de = ds[tag]
        except Exception:  # noqa: BLE001 - an unreadable value: attribute present, no value
            out[key] = {"vr": vr}
            continue
        if de.VR == "SQ":
            items = [dataset_to_json(item, bulk_uri, f"{here}/{i}") for i, item in enumerate(de.value)]
            out[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
            continue
        try:
            out[key] = de.to_json_dict(None, BULK_THRESHOLD)
        except Exception:  # noqa: BLE001 - malformed value (e.g. bad IS): keep the attribute, no value
            out[key] = {"vr": str(de.VR)}
    return out


def resolve_bulk_path(ds: Dataset, path: str) -> bytes:
    """The value bytes at a bulk data path produced by ``dataset_to_json``."""
    if not _BULK_PATH.match(path):
        raise InvalidInputError("invalid bulk data path", code="invalid-bulkdata-path")
    steps = path.split("/")
    current = ds
    for i in range(0, len(steps) - 1, 2):
        tag, index = int(steps[i], 16), int(steps[i + 1])
        if tag not in current or current[tag].VR != "SQ" or index >= len(current[tag].value):
            raise NotFoundError("no such bulk data")
        current = current[tag].value[index]
    tag = int(steps[-1], 16)
    if tag not in current:
        raise NotFoundError("no such bulk data")
    value = current[tag].value
    if not isinstance(value, bytes | bytearray):
        raise NotFoundError("no such bulk data")
    return bytes(value)


def _attribute(keyword: str) -> tuple[str, str] | None:
    tag = keyword_dict.get(keyword)
    if tag is None:
        return None
    return f"{tag:08X}", str(dictionary_VR(tag))


def value_json(vr: str, value: object) -> dict[str, Any]:
    """One attribute in JSON form (F.2.3): PN as Alphabetic, numbers as numbers."""
    values = value if isinstance(value, list | tuple) else [value]
    values = [v for v in values if v is not None and v != ""]
    if not values:
        return {"vr": vr}
    if vr == "PN":
        return {"vr": vr, "Value": [{"Alphabetic": str(v)} for v in values]}
    if vr in _INT_VRS:
        out: list[Any] = []
        for v in values:
            try:
                out.append(int(v))  # type: ignore[arg-type,call-overload]
            except (TypeError, ValueError):
                return {"vr": vr}
        return {"vr": vr, "Value": out}
    if vr in _FLOAT_VRS:
        try:
            return {"vr": vr, "Value": [float(v) for v in values]}  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return {"vr": vr}
    return {"vr": vr, "Value": [str(v) for v in values]}


def row_to_json(row: dict[str, object], keywords: set[str] | None,
                extra: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A search result row as a DICOM JSON object (only ``keywords`` if given)."""
    out: dict[str, Any] = {}
    for keyword, value in row.items():
        if keywords is not None and keyword not in keywords:
            continue
        attr = _attribute(keyword)
        if attr is None:
            continue
        key, vr = attr
        out[key] = value_json(vr, value)
    if extra:
        out.update(extra)
    return dict(sorted(out.items()))


#: Length of the random marker that stands for "<instance URL>/bulkdata/" in stored metadata.
_MARKER_CHARS = 32


def encode_stored_metadata(ds: Dataset) -> bytes | None:
    """``dataset_to_json(ds)`` serialised for storage (compressed; seal it before storing).

    BulkDataURIs are written as ``<marker>:<path>`` with a marker drawn at
    random for this instance, so no attribute value can imitate one; None when
    the dataset has no JSON form (e.g. a NaN float, which JSON forbids).
    """
    marker = secrets.token_hex(_MARKER_CHARS // 2)
    try:
        text = json.dumps(dataset_to_json(ds, lambda path: f"{marker}:{path}"),
                          ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError:
        return None
    return zlib.compress((marker + text).encode("utf-8"), 1)


def render_stored_metadata(stored: bytes, instance_url: str) -> str:
    """The JSON text of ``encode_stored_metadata`` with BulkDataURIs under ``instance_url``."""
    raw = zlib.decompress(stored).decode("utf-8")
    marker, text = raw[:_MARKER_CHARS], raw[_MARKER_CHARS:]
    prefix = json.dumps(f"{instance_url}/bulkdata/")[1:-1]
    return text.replace(f'"{marker}:', f'"{prefix}')
