"""Synthetic DICOM instances for the de-identification tests (generated, not committed).

``full_table_dataset`` sets every attribute of PS3.15 Table E.1-1 to a
recognisable identifying value (markers ``IDVnnnn`` and the family name
SMITHSON), with nested sequences, SR content, private blocks, a curve and an
overlay, over a small CT-like image.
"""

from __future__ import annotations

import re

import numpy as np
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from dicomvault.deid.profile_table import load_table

FAMILY = "SMITHSON"
PATIENT_NAME = f"{FAMILY}^JOHNATHAN"
PATIENT_ID = "MRN7734021"
DATE = "20240315"
MARKER = re.compile(r"IDV\d{4}", re.IGNORECASE)
UID_ROOT = "1.2.826.0.1.3680043.10.543"
KEY = bytes(range(32))


def table_tags() -> dict[int, int]:
    """Numeric tags of the table rows used in the fixture → row index."""
    out = {}
    for index, row in enumerate(load_table().rows):
        inner = row.tag.strip("()").replace(",", "")
        try:
            tag = int(inner, 16)
        except ValueError:
            continue
        if tag >> 16 in (0x0000, 0x0002):
            continue  # command / file meta elements never live in a stored dataset
        out[tag] = index
    return out


def _vr(tag: int) -> str:
    vr = dictionary_VR(tag)
    return {"US or SS": "US", "OB or OW": "OB", "US or OW": "US", "US or SS or OW": "US",
            "OW or OB": "OB"}.get(vr, vr.split(" ")[0])


def value_for(index: int, vr: str, uid_prefix: str = UID_ROOT) -> object:
    """A recognisable identifying value of ``vr`` for table row ``index``.

    Attributes that some option retains (K) carry the row marker but not the patient's
    name: a retained attribute holding the name would rightly be refused on release.
    """
    marker = f"IDV{index:04d}"
    family = FAMILY if "K" not in load_table().rows[index].options.values() else "KEPT"
    return {
        "PN": f"{family}^{marker}",
        "SH": f"{marker} {family}",
        "LO": f"{marker} {family} desc",
        "ST": f"{marker} {family} short text",
        "LT": f"{marker} {family} long text",
        "UT": f"{marker} {family} unlimited text",
        "UC": f"{marker} {family} unlimited chars",
        "CS": marker,
        "AE": marker,
        "UR": f"http://{marker.lower()}.example.org/{family}",
        "DA": DATE,
        "TM": "101112",
        "DT": f"{DATE}101112",
        "AS": "045Y",
        "DS": "12.5",
        "IS": "42",
        "UI": f"{uid_prefix}.{index}",
        "US": 7, "SS": 7, "UL": 7, "SL": 7, "FL": 7.0, "FD": 7.0, "UV": 7, "SV": 7,
        "AT": 0x00100010,
        "OB": f"{marker}{family}".encode(),
        "OW": f"{marker}{family}".encode(),
        "OF": b"\x00\x00\x80\x3f", "OD": b"\x00" * 8, "OL": b"\x01\x00\x00\x00",
        "OV": b"\x00" * 8,
        "UN": f"{marker}{family}".encode(),
    }[vr]


def _sequence_item(index: int, uid_prefix: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = CTImageStorage
    item.ReferencedSOPInstanceUID = f"{uid_prefix}.{index}.1"
    item.add_new(0x0040A123, "PN", f"{FAMILY}^SEQ{index}")  # Person Name: D
    item.BodyPartExamined = "CHEST"  # unlisted: kept by K, dummied by D on the sequence
    inner = Dataset()
    inner.add_new(0x00401001, "SH", f"IDV{index:04d}")  # Requested Procedure ID: X
    inner.add_new(0x00321060, "LO", f"{FAMILY} nested")  # Requested Procedure Description
    item.add_new(0x00400275, "SQ", Sequence([inner]))  # Request Attributes Sequence: X
    return item


def sr_content(uid_prefix: str) -> Sequence:
    """An SR content tree with identifying text, a person, a date and a UID reference."""
    def code(value: str, meaning: str) -> Sequence:
        c = Dataset()
        c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, "DCM", meaning
        return Sequence([c])

    text = Dataset()
    text.RelationshipType, text.ValueType = "CONTAINS", "TEXT"
    text.ConceptNameCodeSequence = code("121106", "Comment")
    text.TextValue = f"Mass stable; {FAMILY} seen on 2024-03-15 by Dr IDV9100"
    person = Dataset()
    person.RelationshipType, person.ValueType = "CONTAINS", "PNAME"
    person.ConceptNameCodeSequence = code("121008", "Person Observer Name")
    person.PersonName = PATIENT_NAME
    uidref = Dataset()
    uidref.RelationshipType, uidref.ValueType = "CONTAINS", "UIDREF"
    uidref.ConceptNameCodeSequence = code("121232", "Source series for segmentation")
    uidref.UID = f"{uid_prefix}.9000"
    nested_text = Dataset()
    nested_text.RelationshipType, nested_text.ValueType = "CONTAINS", "TEXT"
    nested_text.ConceptNameCodeSequence = code("121106", "Comment")
    nested_text.TextValue = f"Nested finding for {FAMILY} IDV9101"
    container = Dataset()
    container.RelationshipType, container.ValueType = "CONTAINS", "CONTAINER"
    container.ConceptNameCodeSequence = code("111033", "Impression Description")
    container.ContinuityOfContent = "SEPARATE"
    container.ContentSequence = Sequence([nested_text])
    return Sequence([text, person, uidref, container])


def full_table_dataset(study: str = "1", instance: str = "1", with_pixels: bool = True,
                       referenced_instance: str | None = None) -> Dataset:
    """Every Table E.1-1 attribute set to an identifying value (see module docstring)."""
    uid_prefix = f"{UID_ROOT}.{study}"
    ds = Dataset()
    for tag, index in sorted(table_tags().items()):
        vr = _vr(tag)
        if vr == "SQ":
            value: object = Sequence([_sequence_item(index, uid_prefix)])
        else:
            value = value_for(index, vr, uid_prefix)
        ds.add_new(tag, vr, value)
    ds.ContentSequence = sr_content(uid_prefix)
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19610203"
    ds.StudyInstanceUID = f"{uid_prefix}.100"
    ds.SeriesInstanceUID = f"{uid_prefix}.200"
    ds.SOPInstanceUID = f"{uid_prefix}.300.{instance}"
    ds.FrameOfReferenceUID = f"{uid_prefix}.400"
    ds.SOPClassUID = CTImageStorage
    ds.Modality = "CT"
    ds.Manufacturer = "ACME"
    ds.BodyPartExamined = "CHEST"
    ds.ConvolutionKernel = "STANDARD"
    ds.SpecificCharacterSet = "ISO_IR 100"
    if referenced_instance is not None:
        ref = Dataset()
        ref.ReferencedSOPClassUID = CTImageStorage
        ref.ReferencedSOPInstanceUID = f"{uid_prefix}.300.{referenced_instance}"
        ds.ReferencedImageSequence = Sequence([ref])
    # Private blocks: one unknown vendor block (with a sequence), one safe-listed element.
    ds.add_new(0x00090010, "LO", "ACME IDENT")
    ds.add_new(0x00091001, "LO", f"{FAMILY} IDV9001")
    priv_item = Dataset()
    priv_item.add_new(0x00100010, "PN", PATIENT_NAME)
    ds.add_new(0x00091002, "SQ", Sequence([priv_item]))
    ds.add_new(0x00190010, "LO", "SIEMENS MR HEADER")
    ds.add_new(0x0019100C, "IS", "1000")
    ds.add_new(0x00191001, "LO", f"{FAMILY} IDV9002")
    # Curve (retired 50xx group) and overlay (60xx group).
    ds.add_new(0x50000005, "US", 1)
    ds.add_new(0x50000010, "US", 2)
    ds.add_new(0x50000020, "CS", "TAC")
    ds.add_new(0x50000022, "LO", f"{FAMILY} curve IDV9003")
    ds.add_new(0x50003000, "OW", b"\x01\x00\x02\x00")
    ds.add_new(0x60000010, "US", 64)
    ds.add_new(0x60000011, "US", 64)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    overlay = np.zeros((64, 64), dtype=np.uint8)
    overlay[10:20, 10:40] = 1
    from pydicom.pixels import pack_bits

    ds.add_new(0x60003000, "OW", pack_bits(overlay.reshape(-1)))
    ds.add_new(0x60004000, "LT", f"{FAMILY} overlay IDV9004")
    if with_pixels:
        add_pixels(ds, np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 1000)
    else:
        for kw in ("BurnedInAnnotation",):
            if kw in ds:
                delattr(ds, kw)
    ds.BurnedInAnnotation = "NO"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.SourceApplicationEntityTitle = "IDVSRCAE"
    ds.file_meta = meta
    return ds


def roundtrip(ds: Dataset) -> Dataset:
    """Write and re-read (the output must parse)."""
    import io

    import pydicom

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


def add_pixels(ds: Dataset, arr: np.ndarray, photometric: str | None = None) -> None:
    """Attach native pixel data (mono uint8/uint16 or RGB uint8; 3-D = frames)."""
    colour = arr.ndim == 4 or (arr.ndim == 3 and arr.shape[-1] == 3 and photometric == "RGB")
    frames = arr.shape[0] if (arr.ndim == 4 or (arr.ndim == 3 and not colour)) else 1
    ds.Rows, ds.Columns = (arr.shape[1:3] if frames > 1 or arr.ndim == 4 else arr.shape[:2])
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = photometric or ("RGB" if colour else "MONOCHROME2")
    if colour:
        ds.PlanarConfiguration = 0
    bits = arr.dtype.itemsize * 8
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = arr.tobytes()
    ds["PixelData"].VR = "OB" if bits == 8 else "OW"


def text_values(ds: Dataset) -> list[tuple[str, str]]:
    """(path, text) of every string-ish value at every depth, incl. private and file meta."""
    out: list[tuple[str, str]] = []

    def walk(d: Dataset, parent: str) -> None:
        for elem in d:
            path = f"{parent}>{elem.tag}"
            if elem.VR == "SQ":
                for i, item in enumerate(elem.value or []):
                    walk(item, f"{path}[{i}]")
            elif elem.tag == 0x7FE00010:
                continue
            elif isinstance(elem.value, bytes):
                out.append((path, elem.value.decode("latin-1")))
            elif elem.value is not None:
                vals = elem.value if isinstance(elem.value, list | tuple) or (
                    hasattr(elem.value, "__iter__") and not isinstance(elem.value, str)) \
                    else [elem.value]
                out.extend((path, str(v)) for v in vals)

    walk(ds, "")
    if getattr(ds, "file_meta", None) is not None:
        walk(ds.file_meta, "meta")
    return out
