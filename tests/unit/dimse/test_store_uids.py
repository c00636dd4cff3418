"""The C-STORE data set's SOP UIDs read by hand equal pydicom's reading, file by file."""

from __future__ import annotations

from pathlib import Path

import pydicom.data
import pytest
from pydicom.uid import UID

from dicomvault.dimse.handlers.store import dataset_sop_uids, pydicom_sop_uids
from dicomvault.errors import InvalidInputError
from dicomvault.services.dicomfile import scan_leading_uids, split_part10

SOP_CLASS, SOP_INSTANCE = 0x00080016, 0x00080018


def _outcome(read, data: bytes, ts: str) -> object:
    try:
        return read(data, ts)
    except InvalidInputError as exc:
        return ("refused", exc.detail)


def test_the_hand_walk_agrees_with_pydicom_on_the_corpus() -> None:
    root = Path(pydicom.data.__file__).parent / "test_files"
    walked = 0
    for path in sorted(root.rglob("*.dcm")):
        raw = path.read_bytes()
        if raw[128:132] != b"DICM":
            continue
        try:
            ts, dataset = split_part10(raw)
        except InvalidInputError:
            continue
        if not ts:
            continue
        ours = _outcome(dataset_sop_uids, dataset, ts)
        theirs = _outcome(lambda d, t: pydicom_sop_uids(d, UID(t)), dataset, ts)
        if isinstance(theirs, tuple) and theirs[0] == "refused":
            assert isinstance(ours, tuple) and ours[0] == "refused", path.name
        else:
            assert ours == theirs, path.name
        uid = UID(ts)
        if uid.is_little_endian and not uid.is_deflated and scan_leading_uids(
                dataset, uid.is_implicit_VR, SOP_INSTANCE, (SOP_CLASS, SOP_INSTANCE)) is not None:
            walked += 1
    assert walked > 50  # most of the corpus takes the hand walk


EXPLICIT = b"\x08\x00\x16\x00UI\x04\x001.2\0" + b"\x08\x00\x18\x00UI\x06\x001.2.3\0"


@pytest.mark.parametrize("data, implicit", [
    (b"\x08\x00\x16\x00\x04\x00\x00\x00" + b"1.2\0", True),  # instance missing
    (b"\x08\x00\x06\x00SQ\0\0\xff\xff\xff\xff" + EXPLICIT, False),  # undefined-length sequence
    (b"\x08\x00\x16\x00UI\x08\x001.2\\1.3", False),  # multi-valued
    (b"\x08\x00\x16\x00\x04\x00\x00\x00" + b"1.2\0" + b"\x08\x00\x18\x00\x04", True),  # cut short
    (b"\x08\x00\x16\x00\x04\x00\x00\x00" + b"1.2\0" + b"\x08\x00\x18\x00\x04\x00\x00\x00", False),
])
def test_what_the_walk_cannot_read_exactly_it_leaves_to_pydicom(data: bytes, implicit: bool) -> None:
    found = scan_leading_uids(data, implicit, SOP_INSTANCE, (SOP_CLASS, SOP_INSTANCE))
    assert found is None or SOP_INSTANCE not in found


def test_padding_is_stripped_as_pydicom_strips_it() -> None:
    assert scan_leading_uids(EXPLICIT, False, SOP_INSTANCE, (SOP_CLASS, SOP_INSTANCE)) == {
        SOP_CLASS: "1.2", SOP_INSTANCE: "1.2.3"}
    assert dataset_sop_uids(EXPLICIT, "1.2.840.10008.1.2.1") == pydicom_sop_uids(
        EXPLICIT, UID("1.2.840.10008.1.2.1")) == ("1.2", "1.2.3")
