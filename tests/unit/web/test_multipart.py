"""multipart/related parsing and writing (RFC 2046 5.1.1, RFC 2387; PS3.18 8.6.1.2)."""

from __future__ import annotations

import pytest

from dicomvault.web.multipart import (
    MultipartError,
    MultipartReader,
    parse_media_type,
    parse_multipart,
    write_parts,
)
from dicomvault.web.negotiation import negotiate_dicom, negotiate_octets, parse_accept
from dicomvault.web.problems import NotAcceptableError

MEDIA_TYPES = [
    ('multipart/related; type="application/dicom"; boundary="abc"',
     ("multipart/related", {"type": "application/dicom", "boundary": "abc"})),
    ("multipart/related; type=application/dicom; boundary=abc",
     ("multipart/related", {"type": "application/dicom", "boundary": "abc"})),
    ('Multipart/Related;TYPE="application/dicom";Boundary="a b:c"',
     ("multipart/related", {"type": "application/dicom", "boundary": "a b:c"})),
    ("multipart/related; type=application/octet-stream; transfer-syntax=*",
     ("multipart/related", {"type": "application/octet-stream", "transfer-syntax": "*"})),
    ("", ("", {})),
    ("garbage", ("", {})),
]

BODY = (b"preamble text\r\n--B\r\nContent-Type: application/dicom\r\n\r\nFIRST\r\n"
        b"--B  \r\n\r\n\r\n--B\r\nContent-Type: x/y\r\nX-Other: 1\r\n\r\nTHIRD\r\nwith CRLF\r\n--B--\r\nepilogue")
EXPECTED = [b"FIRST", b"", b"THIRD\r\nwith CRLF"]


@pytest.mark.parametrize(("value", "expected"), MEDIA_TYPES)
def test_parse_media_type_quoted_and_unquoted(value, expected):
    assert parse_media_type(value) == expected


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 8, 13, 64, len(BODY)])
def test_reader_yields_same_parts_for_any_chunking(chunk):
    reader = MultipartReader("B")
    parts = []
    for i in range(0, len(BODY), chunk):
        parts.extend(reader.feed(BODY[i:i + chunk]))
    reader.close()
    assert [p.content for p in parts] == EXPECTED
    assert parts[0].content_type == "application/dicom" and parts[2].headers["x-other"] == "1"


@pytest.mark.parametrize(("body", "boundary"), [
    (b"--B\r\n\r\nno end", "B"),
    (b"", "B"),
    (b"--B\r\nbad header line without colon\r\n\r\nx\r\n--B--", "B"),
    (b"--B\r\n" + b"X-A: " + b"a" * 9000, "B"),
    (b"--B--", "bad\"boundary"),
    (b"--B--", ""),
])
def test_malformed_bodies_raise(body, boundary):
    with pytest.raises(MultipartError):
        parse_multipart(body, boundary)


def test_write_then_parse_round_trips():
    parts = [("application/dicom", [b"a" * 10, b"b" * 5], None), ("application/dicom", [b""], {"X-N": "2"})]
    body = b"".join(write_parts("BND", parts, batch=4))
    parsed = parse_multipart(body, "BND")
    assert [p.content for p in parsed] == [b"a" * 10 + b"b" * 5, b""]
    assert parsed[1].headers["x-n"] == "2"


ELE, J2K = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.91"
NEGOTIATION = [
    (None, {ELE}, ELE),
    ("*/*", {J2K}, ELE),
    ('multipart/related; type="application/dicom"; transfer-syntax=*', {J2K}, "*"),
    ("multipart/related; type=application/dicom", {"1.2.840.10008.1.2"}, ELE),
    (f"multipart/related; type=application/dicom; transfer-syntax={J2K}", {J2K}, J2K),
    (f'multipart/related; type="application/dicom"; transfer-syntax={J2K}, '
     'multipart/related; type="application/dicom"; transfer-syntax=*;q=0.5', {ELE}, "*"),
]


@pytest.mark.parametrize(("accept", "stored", "expected"), NEGOTIATION)
def test_transfer_syntax_negotiation(accept, stored, expected):
    assert negotiate_dicom(accept, stored) == expected


@pytest.mark.parametrize("accept", [
    "application/dicom+json",
    f"multipart/related; type=application/dicom; transfer-syntax={J2K}",
    "multipart/related; type=image/jpeg",
])
def test_unservable_accept_is_not_acceptable(accept):
    with pytest.raises(NotAcceptableError):
        negotiate_dicom(accept, {ELE})


def test_octet_stream_negotiation_keeps_stored_syntax_for_star():
    assert negotiate_octets("multipart/related; type=application/octet-stream; transfer-syntax=*", J2K) == J2K
    assert negotiate_octets("multipart/related; type=application/octet-stream", J2K) == ELE


def test_accept_q_values_order_ranges():
    ranges = parse_accept("image/png;q=0.2, image/jpeg, */*;q=0")
    assert [r.media_type for r in ranges] == ["image/jpeg", "image/png"]
