"""multipart/related (RFC 2387) for DICOMweb (PS3.18 8.6.1.2): media-type parsing, reading, writing.

* ``parse_media_type`` accepts quoted and unquoted parameters (OHIF's
  ``omitQuotationForMultipartRequest`` sends ``type=application/dicom``).
* ``MultipartReader`` is incremental: feed it body chunks (a chunked upload
  arrives piece by piece) and it yields each part once complete, so only one
  part at a time is held in memory.
* ``write_parts`` streams a response body part by part.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from dicomvault.errors import InvalidInputError

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # noqa: S105 - RFC 9110 token grammar, not a secret
_PARAM = re.compile(rf'\s*;\s*({_TOKEN})\s*=\s*("(?:[^"\\]|\\.)*"|{_TOKEN}(?:/{_TOKEN})?)', re.ASCII)
_MEDIA = re.compile(rf"^\s*({_TOKEN}/{_TOKEN})", re.ASCII)
_BOUNDARY_OK = re.compile(r"^[0-9A-Za-z'()+_,./:=? -]{1,70}$")
MAX_PART_HEADER_BYTES = 8192


class MultipartError(InvalidInputError):
    """The multipart body is malformed."""

    code = "malformed-multipart"


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """``type/subtype; a=b; c="d"`` → (lower-cased type, {lower-cased name: value}) (RFC 9110 8.3.1)."""
    m = _MEDIA.match(value or "")
    if not m:
        return "", {}
    params: dict[str, str] = {}
    rest = value[m.end():]
    pos = 0
    while pos < len(rest):
        pm = _PARAM.match(rest, pos)
        if not pm:
            break
        raw = pm.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[pm.group(1).lower()] = raw
        pos = pm.end()
    return m.group(1).lower(), params


@dataclass
class Part:
    headers: dict[str, str]
    content: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    if not block:
        return headers
    for line in block.split(b"\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep or not name.strip():
            raise MultipartError("malformed part header")
        headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
    return headers


class MultipartReader:
    """Incremental multipart/related parser (RFC 2046 5.1.1 delimiter rules)."""

    def __init__(self, boundary: str) -> None:
        if not _BOUNDARY_OK.match(boundary) or boundary.endswith(" "):
            raise MultipartError("invalid multipart boundary")
        self._delim = b"\r\n--" + boundary.encode("ascii")
        # A leading CRLF makes the first delimiter look like every other one.
        self._buf = bytearray(b"\r\n")
        self._state = "preamble"  # preamble -> headers -> body -> ... -> epilogue
        self._scan_from = 0
        self._headers: dict[str, str] = {}
        self.parts_seen = 0

    def feed(self, chunk: bytes) -> Iterator[Part]:
        """Add body bytes; yield every part completed by them."""
        if self._state == "epilogue":
            return
        self._buf += chunk
        while True:
            if self._state in ("preamble", "body"):
                idx = self._buf.find(self._delim, self._scan_from)
                if idx < 0:
                    self._scan_from = max(0, len(self._buf) - len(self._delim))
                    return
                after = idx + len(self._delim)
                if len(self._buf) < after + 2:
                    self._scan_from = idx
                    return
                tail = bytes(self._buf[after:after + 2])
                if self._state == "body":
                    # One copy (a bytearray slice would copy twice); the view is gone
                    # before the buffer is resized below.
                    content = bytes(memoryview(self._buf)[:idx])
                    self.parts_seen += 1
                    yield Part(self._headers, content)
                if tail == b"--":
                    self._state = "epilogue"
                    self._buf = bytearray()
                    return
                # Transport padding (LWSP) may follow the boundary before the CRLF.
                eol = self._buf.find(b"\r\n", after)
                if eol < 0:
                    if len(self._buf) - after > 256:
                        raise MultipartError("malformed multipart delimiter line")
                    self._scan_from = idx
                    if self._state == "body":  # content already handed out; keep the delimiter
                        del self._buf[:idx]
                        self._scan_from = 0
                        self._state = "preamble"
                    return
                if self._buf[after:eol].strip(b" \t"):
                    if self._state == "body":
                        raise MultipartError("malformed multipart delimiter line")
                    # Not a delimiter after all (text in the preamble): keep scanning.
                    self._scan_from = after
                    continue
                del self._buf[:eol + 2]
                self._scan_from = 0
                self._state = "headers"
            elif self._state == "headers":
                if self._buf.startswith(b"\r\n"):
                    end, skip = 0, 2  # a part without headers
                else:
                    end = self._buf.find(b"\r\n\r\n")
                    skip = 4
                if end < 0:
                    if len(self._buf) > MAX_PART_HEADER_BYTES:
                        raise MultipartError("part headers too long")
                    return
                self._headers = _parse_headers(bytes(self._buf[:end]))
                # The delimiter search needs the CRLF that precedes the next boundary.
                # The content runs up to the next CRLF--boundary (it may be empty).
                del self._buf[:end + skip]
                self._scan_from = 0
                self._state = "body"

    def close(self) -> None:
        """Check the closing delimiter was seen."""
        if self._state != "epilogue":
            raise MultipartError("multipart body is truncated (no closing boundary)")


def parse_multipart(body: bytes, boundary: str) -> list[Part]:
    """Parse a complete body (tests, small requests)."""
    reader = MultipartReader(boundary)
    parts = list(reader.feed(body))
    reader.close()
    return parts


def multipart_length(boundary: str, parts: Iterable[tuple[str, int, dict[str, str] | None]]) -> int:
    """Length of the body ``write_parts`` produces for parts of known (content type, size)."""
    total, first = 0, True
    for content_type, size, extra in parts:
        total += len(part_header(boundary, content_type, extra)) + (0 if first else 2) + size
        first = False
    return total + (0 if first else 2) + len(f"--{boundary}--\r\n".encode("latin-1"))


def new_boundary() -> str:
    return "dicomvault-" + secrets.token_hex(16)


def part_header(boundary: str, content_type: str, extra: dict[str, str] | None = None) -> bytes:
    lines = [f"--{boundary}", f"Content-Type: {content_type}"]
    for name, value in (extra or {}).items():
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def write_parts(boundary: str, parts: Iterable[tuple[str, Iterable[bytes], dict[str, str] | None]],
                *, batch: int = 1 << 20) -> Iterator[bytes]:
    """Stream ``--boundary CRLF headers CRLF CRLF content CRLF … --boundary--`` (RFC 2046 5.1.1).

    Small pieces are coalesced into writes of about ``batch`` bytes.
    """
    pending: list[bytes] = []
    size = 0
    first = True
    for content_type, content, extra in parts:
        head = part_header(boundary, content_type, extra)
        pending.append(head if first else b"\r\n" + head)
        first = False
        size += len(head) + 2
        for chunk in content:
            pending.append(chunk)
            size += len(chunk)
            if size >= batch:
                yield b"".join(pending)
                pending, size = [], 0
    pending.append((b"\r\n" if not first else b"") + f"--{boundary}--\r\n".encode("latin-1"))
    yield b"".join(pending)
