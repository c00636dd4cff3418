"""Content negotiation for WADO-RS (PS3.18 8.7): Accept → media type and transfer syntax.

Rules (PS3.18 8.7.3.5): ``transfer-syntax=*`` returns what is stored; no
``transfer-syntax`` means Explicit VR Little Endian (1.2.840.10008.1.2.1);
an explicit UID is honoured when the stored object is already in it or can be
decoded to Explicit VR Little Endian; anything else is 406.
"""

from __future__ import annotations

from dataclasses import dataclass

from dicomvault.web.multipart import parse_media_type
from dicomvault.web.problems import NotAcceptableError

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
ANY_TS = "*"
#: Stored syntaxes we can re-encode as Explicit VR Little Endian without pixel decoding.
NATIVE_LE = frozenset({IMPLICIT_LE, EXPLICIT_LE})
#: Compressed syntaxes pydicom decodes here (RLE natively; JPEG, JPEG-LS via pylibjpeg-libjpeg;
#: JPEG 2000 via pylibjpeg-openjpeg).
DECODABLE = frozenset({
    "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203",
})


@dataclass(frozen=True)
class MediaRange:
    media_type: str
    params: dict[str, str]
    q: float


def _split_commas(value: str) -> list[str]:
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [s for s in (p.strip() for p in out) if s]


def parse_accept(header: str | None) -> list[MediaRange]:
    """Media ranges by preference (RFC 9110 12.5.1); an absent header accepts anything."""
    if not header or not header.strip():
        return [MediaRange("*/*", {}, 1.0)]
    ranges: list[MediaRange] = []
    for item in _split_commas(header[:4096]):
        media_type, params = parse_media_type(item)
        if not media_type:
            continue
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 1.0
        if q > 0:
            ranges.append(MediaRange(media_type, params, q))
    return sorted(ranges, key=lambda r: -r.q)


def can_serve(stored_ts: str, target: str) -> bool:
    """Whether an object stored in ``stored_ts`` can be sent in ``target``."""
    if target in (ANY_TS, stored_ts):
        return True
    return target == EXPLICIT_LE and (stored_ts in NATIVE_LE or stored_ts in DECODABLE)


def negotiate_dicom(accept: str | None, stored: set[str]) -> str:
    """The transfer syntax (or ``*``) for ``multipart/related; type=application/dicom`` (8.7.3.5.2)."""
    for rng in parse_accept(accept):
        if rng.media_type in ("*/*", "multipart/*"):
            target = EXPLICIT_LE
        elif rng.media_type in ("multipart/related", "application/dicom"):
            part_type = rng.params.get("type", "application/dicom").lower()
            if rng.media_type == "multipart/related" and part_type not in (
                    "application/dicom", "application/*", "*/*"):
                continue
            target = rng.params.get("transfer-syntax", EXPLICIT_LE)
        else:
            continue
        if all(can_serve(ts, target) for ts in stored):
            return target
    raise NotAcceptableError("none of the accepted media types or transfer syntaxes can be served")


def negotiate_octets(accept: str | None, stored_ts: str) -> str:
    """Transfer syntax for frames / bulk data as ``application/octet-stream`` (8.7.3.5.3)."""
    for rng in parse_accept(accept):
        if rng.media_type in ("*/*", "multipart/*"):
            target = EXPLICIT_LE
        elif rng.media_type in ("multipart/related", "application/octet-stream"):
            part_type = rng.params.get("type", "application/octet-stream").lower()
            if rng.media_type == "multipart/related" and part_type not in (
                    "application/octet-stream", "application/*", "*/*"):
                continue
            target = rng.params.get("transfer-syntax", EXPLICIT_LE)
        else:
            continue
        if can_serve(stored_ts, target):
            return stored_ts if target == ANY_TS else target
    raise NotAcceptableError("none of the accepted media types or transfer syntaxes can be served")


def negotiate_image(accept: str | None) -> str:
    """``image/jpeg`` (default) or ``image/png`` for rendered resources (8.7.4)."""
    for rng in parse_accept(accept):
        if rng.media_type in ("image/jpeg", "image/png"):
            return rng.media_type
        if rng.media_type in ("*/*", "image/*"):
            return "image/jpeg"
    raise NotAcceptableError("rendered resources are available as image/jpeg or image/png")
