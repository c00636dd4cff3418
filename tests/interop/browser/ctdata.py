"""Synthetic CT series for the browser tests and the viewer benchmark (PS3.3 A.3 CT Image IOD).

A phantom with a visible pattern: a body-like ellipse (soft tissue), a bright
"bone" ring, and a dense marker whose position moves with the slice number, so
that scrolling visibly changes the image and window/level changes the pixels.
16-bit signed, Rescale Slope 1 / Intercept -1024 → Hounsfield units.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROOT = "1.2.826.0.1.3680043.10.1134."  # an example root for test data


@dataclass(frozen=True)
class SeriesSpec:
    patient_id: str
    patient_name: str
    study_uid: str
    series_uid: str
    accession: str
    description: str
    slices: int = 20
    size: int = 256
    referring: str = ""
    #: Stored transfer syntax: explicit VR little endian, or a compressed one (e.g. JPEG 2000
    #: lossless, which OHIF decodes with a WebAssembly codec).
    transfer_syntax: str = ExplicitVRLittleEndian


def new_spec(patient_id: str, patient_name: str, description: str, *, slices: int = 20,
             size: int = 256, referring: str = "", transfer_syntax: str = ExplicitVRLittleEndian) -> SeriesSpec:
    return SeriesSpec(patient_id, patient_name, generate_uid(ROOT), generate_uid(ROOT),
                      f"ACC{patient_id[-4:]}", description, slices, size, referring, transfer_syntax)


def phantom(index: int, slices: int, size: int) -> np.ndarray:
    """Stored values (HU + 1024) of slice ``index``."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    c = (size - 1) / 2
    hu = np.full((size, size), -1000.0, dtype=np.float32)  # air
    body = ((x - c) / (0.42 * size)) ** 2 + ((y - c) / (0.34 * size)) ** 2 <= 1
    hu[body] = 40 + 30 * np.sin(x[body] / 9.0) * np.cos(y[body] / 11.0)  # textured soft tissue
    r = np.hypot(x - c, y - c)
    ring = (r > 0.26 * size) & (r < 0.30 * size)
    hu[ring] = 900  # bone
    angle = 2 * np.pi * index / max(slices, 1)
    mx, my = c + 0.16 * size * np.cos(angle), c + 0.16 * size * np.sin(angle)
    marker = (x - mx) ** 2 + (y - my) ** 2 <= (0.05 * size) ** 2
    hu[marker] = 1500 + 10 * index  # a dense marker circling with the slice number
    stripe = (np.abs(x - c) < 2) & body
    hu[stripe] = -400 + 20 * index
    return np.clip(hu + 1024, 0, 4095).astype(np.uint16)


def ct_slice(spec: SeriesSpec, index: int) -> bytes:
    """One CT instance as Part 10 bytes (explicit VR little endian)."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid(ROOT)
    ds.StudyInstanceUID = spec.study_uid
    ds.SeriesInstanceUID = spec.series_uid
    ds.FrameOfReferenceUID = spec.series_uid + ".1" if len(spec.series_uid) < 62 else generate_uid(ROOT)
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240105"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.AccessionNumber = spec.accession
    ds.ReferringPhysicianName = spec.referring
    ds.StudyID = "1"
    ds.StudyDescription = spec.description
    ds.SeriesDescription = "Axial phantom"
    ds.Modality = "CT"
    ds.Manufacturer = "dicomvault test"
    ds.SeriesNumber = 1
    ds.InstanceNumber = index + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PatientPosition = "HFS"
    thickness = 2.5
    ds.SliceThickness = thickness
    ds.ImagePositionPatient = [-0.5 * spec.size * 0.7, -0.5 * spec.size * 0.7, index * thickness]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = index * thickness
    ds.PixelSpacing = [0.7, 0.7]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = spec.size
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    ds.KVP = 120
    ds.PixelData = phantom(index, spec.slices, spec.size).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    if spec.transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(spec.transfer_syntax, encoding_plugin="pylibjpeg")
    out = DicomBytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def series(spec: SeriesSpec) -> Iterator[bytes]:
    for i in range(spec.slices):
        yield ct_slice(spec, i)
