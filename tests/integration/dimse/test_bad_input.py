"""Bad input over DIMSE: refused with the right status or abort, server up, nothing stored."""

from __future__ import annotations

import os
import struct
import time

import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import build_context
from pynetdicom.sop_class import CTImageStorage, MRImageStorage  # type: ignore[attr-defined]
from sqlalchemy import func, select

from dicomvault.index.models import Instance
from tests.integration.dimse.scu import connect, make_ct, store_bytes

pytestmark = pytest.mark.integration


def _element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0"
    return struct.pack("<HH", group, elem) + vr + struct.pack("<H", len(value)) + value


def _never_ending_sequence(sop_class: str, sop_instance: str) -> bytes:
    """SOP UIDs, then an undefined-length sequence whose item and sequence never end."""
    head = _element(0x0008, 0x0016, b"UI", sop_class.encode())
    head += _element(0x0008, 0x0018, b"UI", sop_instance.encode())
    seq = struct.pack("<HH", 0x0008, 0x1115) + b"SQ\0\0" + struct.pack("<L", 0xFFFFFFFF)
    item = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
    return head + seq + item + _element(0x0008, 0x1150, b"UI", sop_class.encode())


def _garbage(sop_class: str, sop_instance: str) -> bytes:
    return os.urandom(4096)


def _truncated(sop_class: str, sop_instance: str) -> bytes:
    _ds, data = make_ct(SOPInstanceUID=sop_instance)
    return data[: len(data) // 2]


def _garbage_after_valid_head(sop_class: str, sop_instance: str) -> bytes:
    head = _element(0x0008, 0x0016, b"UI", sop_class.encode())
    head += _element(0x0008, 0x0018, b"UI", sop_instance.encode())
    return head + os.urandom(2048)


# (case, dataset builder) -> the response must be a failure (0xA700-0xCFFF range classes)
BAD_DATASETS = [
    ("garbage", _garbage),
    ("truncated", _truncated),
    ("never-ending-undefined-length", _never_ending_sequence),
    ("garbage-after-valid-head", _garbage_after_valid_head),
]


def _instances(door) -> int:
    with door.services.read_factory() as s:
        return int(s.execute(select(func.count()).select_from(Instance)).scalar_one())


def _blob_files(door) -> list[str]:
    root = door.settings.blob_root
    return [str(p) for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _assert_up_and_empty(door) -> None:
    ok = connect(door)
    assert ok.is_established and ok.send_c_echo().Status == 0
    ok.release()
    assert _instances(door) == 0
    assert _blob_files(door) == []


@pytest.mark.parametrize(("case", "build"), BAD_DATASETS)
def test_bad_dataset_refused_nothing_stored(door, case, build):
    sop_instance = generate_uid()
    data = build(str(CTImageStorage), sop_instance)
    assoc = connect(door, contexts=[build_context(CTImageStorage, [ExplicitVRLittleEndian])])
    status = store_bytes(assoc, CTImageStorage, sop_instance, ExplicitVRLittleEndian, data)
    assoc.release()
    assert 0xC000 <= status <= 0xCFFF or status == 0xA900, hex(status)
    _assert_up_and_empty(door)


def test_wrong_sop_class_for_context_answers_a900(door):
    ds, data = make_ct()
    assoc = connect(door, contexts=[build_context(MRImageStorage, [ExplicitVRLittleEndian])])
    status = store_bytes(assoc, MRImageStorage, ds.SOPInstanceUID, ExplicitVRLittleEndian, data)
    assoc.release()
    assert status == 0xA900
    _assert_up_and_empty(door)


def test_sop_instance_uid_differing_from_request_refused(door):
    ds, data = make_ct()
    assoc = connect(door, contexts=[build_context(CTImageStorage, [ExplicitVRLittleEndian])])
    status = store_bytes(assoc, CTImageStorage, generate_uid(), ExplicitVRLittleEndian, data)
    assoc.release()
    assert 0xC000 <= status <= 0xCFFF
    _assert_up_and_empty(door)


def test_oversize_pdu_aborts_association(door):
    """Only the header of an oversize P-DATA-TF is sent: the server must refuse it on the
    announced length alone (an unchecked server would sit waiting for the body)."""
    assoc = connect(door, contexts=[build_context(CTImageStorage, [ExplicitVRLittleEndian])])
    assert assoc.is_established
    announced = door.settings.dimse.max_pdu + 1024
    assoc.dul.socket.send(struct.pack(">BBL", 0x04, 0, announced))
    deadline = time.monotonic() + 3
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not assoc.is_established
    assert assoc.is_aborted
    _assert_up_and_empty(door)


def test_large_instance_within_pdu_limit_is_fragmented_and_stored(door):
    ds, data = make_ct()
    assoc = connect(door, contexts=[build_context(CTImageStorage, [ExplicitVRLittleEndian])],
                    max_pdu=0)
    assert assoc.acceptor.maximum_length == door.settings.dimse.max_pdu
    assert store_bytes(assoc, ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian,
                       data) == 0
    assoc.release()
    assert _instances(door) == 1
