"""Interop with DCMTK (a client no one here wrote), every tool over mutual TLS.

echoscu, storescu (uncompressed and compressed), findscu (Patient and Study Root, all levels,
wildcards, ranges, universal matching), getscu and movescu (to DCMTK storescp over TLS),
checking that retrieved objects are byte-identical to what was stored.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicomvault.services.dicomfile import split_part10
from tests.interop.dcmtk.conftest import tls_args

pytestmark = pytest.mark.interop


def corpus(name: str) -> str:
    """Path of a file in pydicom's bundled test corpus."""
    return str(get_testdata_file(name))

# (corpus file, getscu preference flag for its transfer syntax)
FILES = [
    ("CT_small.dcm", "+xe"),                 # Explicit VR Little Endian
    ("MR_small_RLE.dcm", "+xr"),             # RLE Lossless
    ("examples_jpeg2k.dcm", "+xv"),          # JPEG 2000 lossless
    ("SC_rgb_jpeg_dcmtk.dcm", "+xy"),        # JPEG Baseline
]
#: storescu proposes only uncompressed syntaxes unless told which compressed one to offer
STORESCU_PROPOSE = {"+xe": "-xe", "+xr": "-xr", "+xv": "-xv", "+xy": "-xy"}


def run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def _peer(door) -> list[str]:
    return ["-aet", "SCU", "-aec", "DICOMVAULT", *tls_args(door.pki), "127.0.0.1",
            str(door.port)]


def _store(door, dcmtk, *names: str) -> None:
    prefs = dict(FILES)
    for name in names:
        propose = STORESCU_PROPOSE[prefs[name]]
        res = run([dcmtk["storescu"], propose, "-R", *_peer(door),
                   corpus(name)])
        assert res.returncode == 0, res.stderr
        assert "Store Response" not in res.stderr or "Success" in res.stdout + res.stderr


def _relayed(relay) -> list[str]:
    """getscu/movescu 3.6.7 lack TLS: they talk through the mutual-TLS relay."""
    return ["-aet", "SCU", "-aec", "DICOMVAULT", "127.0.0.1", str(relay.port)]


def _dataset_bytes(path: str | Path) -> tuple[str, bytes]:
    return split_part10(Path(path).read_bytes())


def _stored(door, sop_instance_uid: str) -> tuple[str, bytes]:
    """What the archive holds for an instance (storescu re-encodes what it sends, so the
    reference for "byte-identical" is the stored object, not the source file)."""
    from dicomvault.access.principal import system_principal

    refs = door.services.archive.locate(system_principal("test"), "IMAGE",
                                        {"SOPInstanceUID": sop_instance_uid}, door="test",
                                        purpose="test")
    assert len(refs) == 1
    return door.services.archive.read_dataset(refs[0])


def _same_pixels(path_a: str | Path, path_b: str | Path) -> bool:
    a, b = pydicom.dcmread(path_a), pydicom.dcmread(path_b)
    return a.PixelData == b.PixelData and a.file_meta.TransferSyntaxUID == \
        b.file_meta.TransferSyntaxUID


def test_echoscu_over_tls(door, dcmtk):
    res = run([dcmtk["echoscu"], *_peer(door)])
    assert res.returncode == 0, res.stderr


def test_echoscu_unknown_ae_rejected(door, dcmtk):
    res = run([dcmtk["echoscu"], "-aet", "STRANGER", "-aec", "DICOMVAULT",
               *tls_args(door.pki), "127.0.0.1", str(door.port)])
    assert res.returncode != 0
    assert "Calling AE Title Not Recognized" in res.stderr or "Rejected" in res.stderr, \
        res.stderr


def test_echoscu_without_tls_refused(door, dcmtk):
    res = run([dcmtk["echoscu"], "-aet", "SCU", "-aec", "DICOMVAULT", "-to", "5", "-ta", "5",
               "127.0.0.1", str(door.port)])
    assert res.returncode != 0
    ok = run([dcmtk["echoscu"], *_peer(door)])
    assert ok.returncode == 0, ok.stderr


def _find(door, dcmtk, tmp_path: Path, model: str, keys: list[str]) -> list[pydicom.Dataset]:
    out = tmp_path / f"find{len(list(tmp_path.iterdir()))}"
    out.mkdir()
    args = [dcmtk["findscu"], model, "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    res = run([*args, *_peer(door)])
    assert res.returncode == 0, res.stderr
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def _ct(stored):
    return next(d for d in stored if d.Modality == "CT")


def _mr(stored):
    return next(d for d in stored if d.Modality == "MR")


# (case, model flag, keys built from the stored datasets, attribute, expected values)
FIND_CASES = [
    ("patient-wildcard", "-P",
     lambda st: ["QueryRetrieveLevel=PATIENT", "PatientID", "PatientName=CompressedSamples^M*"],
     "PatientName", lambda st: {str(d.PatientName) for d in st
                                if str(d.PatientName).startswith("CompressedSamples^M")}),
    ("patient-exact-id", "-P",
     lambda st: ["QueryRetrieveLevel=PATIENT", f"PatientID={_ct(st).PatientID}", "PatientName"],
     "PatientName", lambda st: {str(_ct(st).PatientName)}),
    ("patient-universal", "-P",
     lambda st: ["QueryRetrieveLevel=PATIENT", "PatientID", "PatientName"],
     "PatientID", lambda st: {str(d.PatientID) for d in st}),
    ("study-date-range", "-S",
     lambda st: ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientID",
                 f"StudyDate={_ct(st).StudyDate}-{_ct(st).StudyDate}"],
     "PatientID", lambda st: {str(d.PatientID) for d in st
                              if str(d.get("StudyDate", "")) == str(_ct(st).StudyDate)}),
    ("study-open-range", "-S",
     lambda st: ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientID", "StudyDate=-19000101"],
     "PatientID", lambda st: set()),
    ("study-universal", "-S",
     lambda st: ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientID"],
     "StudyInstanceUID", lambda st: {str(d.StudyInstanceUID) for d in st}),
    ("patient-root-study", "-P",
     lambda st: ["QueryRetrieveLevel=STUDY", f"PatientID={_mr(st).PatientID}",
                 "StudyInstanceUID"],
     "StudyInstanceUID", lambda st: {str(_mr(st).StudyInstanceUID)}),
    ("series-modality", "-S",
     lambda st: ["QueryRetrieveLevel=SERIES", f"StudyInstanceUID={_mr(st).StudyInstanceUID}",
                 "SeriesInstanceUID", "Modality=MR"],
     "SeriesInstanceUID", lambda st: {str(_mr(st).SeriesInstanceUID)}),
    ("image", "-S",
     lambda st: ["QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={_ct(st).StudyInstanceUID}",
                 f"SeriesInstanceUID={_ct(st).SeriesInstanceUID}", "SOPInstanceUID",
                 "SOPClassUID"],
     "SOPInstanceUID", lambda st: {str(_ct(st).SOPInstanceUID)}),
    ("image-patient-root", "-P",
     lambda st: ["QueryRetrieveLevel=IMAGE", f"PatientID={_mr(st).PatientID}",
                 f"StudyInstanceUID={_mr(st).StudyInstanceUID}",
                 f"SeriesInstanceUID={_mr(st).SeriesInstanceUID}", "SOPInstanceUID"],
     "SOPInstanceUID", lambda st: {str(_mr(st).SOPInstanceUID)}),
]


@pytest.fixture
def stored_all(door, dcmtk) -> list[pydicom.Dataset]:
    names = [n for n, _ in FILES]
    _store(door, dcmtk, *names)
    return [pydicom.dcmread(corpus(n), stop_before_pixels=True) for n in names]


@pytest.mark.parametrize(("case", "model", "keys", "attr", "expected"), FIND_CASES,
                         ids=[c[0] for c in FIND_CASES])
def test_findscu_matches(door, dcmtk, stored_all, tmp_path, case, model, keys, attr, expected):
    rows = _find(door, dcmtk, tmp_path, model, keys(stored_all))
    assert {str(r.get(attr, "")) for r in rows} == expected(stored_all)


@pytest.mark.parametrize(("name", "pref"), FILES)
def test_storescu_then_getscu_returns_identical_bytes(door, dcmtk, relay, tmp_path, name, pref):
    _store(door, dcmtk, name)
    ds = pydicom.dcmread(corpus(name), stop_before_pixels=True)
    out = tmp_path / "get"
    out.mkdir()
    res = run([dcmtk["getscu"], "-S", pref, "+B", "-od", str(out),
               "-k", "QueryRetrieveLevel=IMAGE",
               "-k", f"StudyInstanceUID={ds.StudyInstanceUID}",
               "-k", f"SeriesInstanceUID={ds.SeriesInstanceUID}",
               "-k", f"SOPInstanceUID={ds.SOPInstanceUID}", *_relayed(relay)])
    assert res.returncode == 0, res.stderr
    files = list(out.iterdir())
    assert len(files) == 1, res.stderr
    assert _dataset_bytes(files[0]) == _stored(door, str(ds.SOPInstanceUID))
    assert _same_pixels(files[0], corpus(name))


def test_movescu_to_tls_storescp_delivers_identical_bytes(door, dcmtk, relay, storescp):
    names = [n for n, _ in FILES]
    _store(door, dcmtk, *names)
    for name in names:
        ds = pydicom.dcmread(corpus(name), stop_before_pixels=True)
        res = run([dcmtk["movescu"], "-S", "-aem", "DEST",
                   "-k", "QueryRetrieveLevel=STUDY",
                   "-k", f"StudyInstanceUID={ds.StudyInstanceUID}", *_relayed(relay)])
        assert res.returncode == 0, res.stderr
    received = {}
    for path in storescp.out.iterdir():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        received[str(ds.SOPInstanceUID)] = _dataset_bytes(path)
    expected = {}
    for name in names:
        ds = pydicom.dcmread(corpus(name), stop_before_pixels=True)
        expected[str(ds.SOPInstanceUID)] = _stored(door, str(ds.SOPInstanceUID))
    assert received == expected
    for path in storescp.out.iterdir():
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        source = next(corpus(n) for n in names if str(pydicom.dcmread(
            corpus(n), stop_before_pixels=True).SOPInstanceUID) == uid)
        assert _same_pixels(path, source)


def test_movescu_to_unknown_destination_fails(door, dcmtk, relay, storescp):
    _store(door, dcmtk, "CT_small.dcm")
    ds = pydicom.dcmread(corpus("CT_small.dcm"), stop_before_pixels=True)
    res = run([dcmtk["movescu"], "-S", "-aem", "NOWHERE", "-k", "QueryRetrieveLevel=STUDY",
               "-k", f"StudyInstanceUID={ds.StudyInstanceUID}", *_relayed(relay)])
    assert res.returncode != 0
    assert "MoveDestinationUnknown" in res.stdout + res.stderr, res.stderr
    assert list(storescp.out.iterdir()) == []
