"""The hand-written PS3.10 file meta group equals pydicom's encoding of the same values."""

from __future__ import annotations

import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID

from dicomvault.services.dicomfile import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION,
    build_file_meta,
    split_part10,
)


def _pydicom_meta(sop_class: str, sop_instance: str, ts: str, source_ae: str | None) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(ts)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    if source_ae:
        meta.SourceApplicationEntityTitle = source_ae
    buf = DicomBytesIO()
    buf.is_little_endian = True
    buf.is_implicit_VR = False
    write_file_meta_info(buf, meta, enforce_standard=True)
    return buf.getvalue()


@pytest.mark.parametrize("sop_class, sop_instance, ts, source_ae", [
    ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "1.2.840.10008.1.2.1", "STORESCU"),  # even lengths
    ("1.2.840.10008.5.1.4.1.1.4", "1.2.3.45", "1.2.840.10008.1.2", "ODD"),  # odd: padded
    ("1.2.840.10008.5.1.4.1.1.7", "2.25.1234567890123456789", "1.2.840.10008.1.2.4.50", None),
])
def test_file_meta_equals_pydicom(sop_class, sop_instance, ts, source_ae):
    ours = build_file_meta(sop_class, sop_instance, ts, source_ae)
    assert ours[:128] == b"\0" * 128 and ours[128:132] == b"DICM"
    assert ours[132:] == _pydicom_meta(sop_class, sop_instance, ts, source_ae)
    # and it reads back: the transfer syntax, then the dataset that follows it
    dataset = b"\x08\x00\x60\x00CS\x02\x00CT"  # (0008,0060) Modality "CT", explicit VR LE
    assert split_part10(ours + dataset) == (ts, dataset)


def _corpus_with_meta() -> list:
    from pathlib import Path

    import pydicom.data

    root = Path(pydicom.data.__file__).parent / "test_files"
    out = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.stat().st_size > 132:
            head = path.read_bytes()[:132]
            if head[128:132] == b"DICM":
                out.append(path)
    return out


def test_the_meta_scan_agrees_with_pydicom_on_the_corpus():
    """``split_part10`` walks the file meta by hand: the same transfer syntax and the same
    dataset start as pydicom's reader, for every PS3.10 file in pydicom's test corpus."""
    import io

    from pydicom.filereader import _read_file_meta_info

    checked = 0
    for path in _corpus_with_meta():
        data = path.read_bytes()
        stream = io.BytesIO(data[132:])
        try:
            meta = _read_file_meta_info(stream)
        except Exception:  # noqa: BLE001 - pydicom cannot read it either: not compared
            continue
        ts = str(meta.get("TransferSyntaxUID", "")).rstrip("\x00 ")
        if not ts:
            continue
        assert split_part10(data) == (ts, data[132 + stream.tell():]), path.name
        checked += 1
    assert checked > 50


@pytest.mark.parametrize("cut", [134, 140, 150])
def test_a_truncated_meta_group_is_refused(cut):
    from dicomvault.errors import InvalidInputError

    data = b"\0" * 128 + b"DICM" + build_file_meta("1.2.3", "1.2.3.4", "1.2.840.10008.1.2.1", None)[132:]
    with pytest.raises(InvalidInputError):
        split_part10(data[:cut])
