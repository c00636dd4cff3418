"""``read_identifier`` gives the keys pydicom's decoding gives, or declines (``None``)."""

from __future__ import annotations

import random
import struct
from io import BytesIO

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom.dsutils import decode, encode

from dicomvault.dimse.handlers.find import translate_identifier
from dicomvault.dimse.identifier import keys_of, read_identifier
from dicomvault.dimse.wire import IdentifierLayout
from dicomvault.errors import InvalidInputError
from tests.unit.dimse.test_wire import _identifier

#: (keyword, candidate matching values) of the keys a C-FIND SCU sends; "" = return key.
KEYS = {
    "PatientID": ["", "PID-1", "PID*", "*", "P?D-1", "A B"],
    "PatientName": ["", "DOE^JANE", "DOE*", "Doe^J^^Dr", "SMI*^J*", "=YAMADA^TARO", "D"],
    "PatientBirthDate": ["", "19700101", "1970-", "-19801231", "19700101-19801231"],
    "PatientSex": ["", "F", "M", "O"],
    "StudyInstanceUID": ["", "1.2.3", "1.2.840.1\\1.2.840.2", "1.2.3.4.5.6.7.8.9.10.11.12.13"],
    "StudyDate": ["", "20240102", "20240101-20240131", "2024-"],
    "StudyTime": ["", "101500", "1015-1130", "10"],
    "AccessionNumber": ["", "ACC1", "ACC*"],
    "StudyDescription": ["", "CT HEAD", "*HEAD*", "X"],
    "ModalitiesInStudy": ["", "CT", "CT\\MR", "MR\\CT\\SR"],
    "ReferringPhysicianName": ["", "WHO^DR"],
    "StudyID": ["", "7", "S*"],
    "SeriesInstanceUID": ["", "1.2.3.4"],
    "Modality": ["", "CT"],
    "SeriesNumber": [""],
    "NumberOfStudyRelatedInstances": [""],
    "SOPInstanceUID": ["", "1.2.3.4.5"],
    "SOPClassUID": ["", "1.2.840.10008.5.1.4.1.1.2"],
    "InstanceNumber": [""],
    "Rows": [None],
}


def _generated(count: int) -> list[Dataset]:
    rng = random.Random(20261203)
    out = []
    for _ in range(count):
        chosen = rng.sample(sorted(KEYS), rng.randint(1, len(KEYS)))
        keys = {k: rng.choice(KEYS[k]) for k in chosen}
        out.append(_identifier(rng.choice(["PATIENT", "STUDY", "SERIES", "IMAGE"]),
                               rng.choice([None, None, "ISO_IR 100", "ISO_IR 192", ""]), **keys))
    return out


def _both(raw: bytes, explicit: bool) -> tuple[object, object]:
    return read_identifier(raw, explicit), keys_of(decode(BytesIO(raw), not explicit, True))


@pytest.mark.parametrize("explicit", [False, True], ids=["implicit", "explicit"])
def test_generated_identifiers_read_as_pydicom_reads_them(explicit: bool) -> None:
    read = 0
    for identifier in _generated(400):
        raw = encode(identifier, not explicit, True)
        fast, slow = _both(raw, explicit)
        assert fast is not None, identifier  # nothing here needs pydicom
        assert fast == slow
        read += 1
        for model in ("PATIENT", "STUDY"):
            try:
                expected = translate_identifier(decode(BytesIO(raw), not explicit, True), model)
            except InvalidInputError:
                with pytest.raises(InvalidInputError):
                    translate_identifier(fast, model)
                continue
            assert translate_identifier(fast, model) == expected
        level = str(identifier.QueryRetrieveLevel)
        by_pydicom = IdentifierLayout(decode(BytesIO(raw), not explicit, True), level)
        by_hand = IdentifierLayout(fast, level)
        assert (by_hand.keys, by_hand.supported, by_hand._request_charset) == (
            by_pydicom.keys, by_pydicom.supported, by_pydicom._request_charset)
    assert read == 400


def _element(tag: int, vr: bytes, value: bytes, explicit: bool) -> bytes:
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if not explicit:
        return head + struct.pack("<I", len(value)) + value
    return head + vr + struct.pack("<H", len(value)) + value


LEVEL = (0x00080052, b"CS", b"STUDY ")


@pytest.mark.parametrize("explicit", [False, True], ids=["implicit", "explicit"])
@pytest.mark.parametrize("element, why", [
    ((0x00100010, b"PN", "Müller^Zoë".encode("latin-1")), "non-ASCII: its charset decodes it"),
    ((0x00100020, b"LO", b"PID  "), "padding beyond one byte"),
    ((0x00100020, b"LO", b" PID"), "leading space"),
    ((0x00100020, b"LO", b"A \\B "), "padding inside a multi-value"),
    ((0x00201208, b"IS", b"12"), "a number: pydicom rewrites it"),
    ((0x00280010, b"US", b"\x00\x02"), "a binary value"),
    ((0x00091010, b"LO", b"PRIVATE "), "a private tag"),
    ((0x00100020, b"LO", b"PID\x00X "), "a NUL inside the value"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_declines_what_pydicom_must_read(explicit: bool, element: tuple[int, bytes, bytes],
                                         why: str) -> None:
    raw = _element(*LEVEL, explicit) + _element(*element, explicit)
    assert read_identifier(raw, explicit) is None, why
    decode(BytesIO(raw), not explicit, True)  # while pydicom can read it


def test_declines_a_sequence_and_an_undefined_length() -> None:
    ds = _identifier("STUDY", StudyInstanceUID="", ReferencedStudySequence=Sequence())
    assert read_identifier(encode(ds, False, True), True) is None
    assert read_identifier(encode(ds, True, True), False) is None
    undefined = (struct.pack("<HH", 0x0010, 0x0020) + b"UN\0\0" + struct.pack("<I", 0xFFFFFFFF))
    assert read_identifier(_element(*LEVEL, True) + undefined, True) is None


def test_declines_an_explicit_vr_other_than_the_dictionary_s() -> None:
    raw = _element(*LEVEL, True) + _element(0x00100020, b"SH", b"PID1", True)  # PatientID is LO
    assert read_identifier(raw, True) is None


@pytest.mark.parametrize("cut", [1, 3, 5, 9, 11])
def test_declines_truncated_bytes(cut: int) -> None:
    raw = _element(*LEVEL, True) + _element(0x00100020, b"LO", b"PID1", True)
    assert read_identifier(raw[:-cut], True) is None


def test_empty_identifier_and_empty_values() -> None:
    assert read_identifier(b"", True) == []
    raw = _element(*LEVEL, False) + _element(0x00280010, b"US", b"", False)
    fast, slow = _both(raw, False)
    assert fast == slow
