"""Benchmark: de-identification throughput (files/s) on generated 512x512 CT instances.

Prints ONE JSON line: dicomvault's basic profile without and with OCR (Clean
Pixel Data: Tesseract masking + OCR verification), and the same folder through
the PyPI packages ``dicognito`` and ``deid`` (pydicom/deid, default recipe) in
the same run, with ratios.  Install them with ``pip install -e '.[bench]'``.

    python bench/bench_deid.py [--files 40] [--ocr-files 6]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from dicomvault.deid import DeidConfig, Option
from dicomvault.deid.batch import run_batch

KEY = bytes(range(32))


def make_ct(folder: Path, count: int) -> None:
    """``count`` 512x512 16-bit CT instances of one study with typical identifying header."""
    rng = np.random.default_rng(7)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    yy, xx = np.mgrid[:512, :512]
    body = ((yy - 256) ** 2 + (xx - 256) ** 2 < 200 ** 2) * 1000
    for i in range(count):
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = "BENCH^PATIENT", "B123456", "19700101"
        ds.PatientSex, ds.AccessionNumber, ds.StudyID = "F", "ACC123", "1"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240315"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101112"
        ds.InstitutionName, ds.ReferringPhysicianName = "General Hospital", "REF^DOC"
        ds.StationName, ds.DeviceSerialNumber = "CT01", "SN998877"
        ds.Modality, ds.Manufacturer, ds.StudyDescription = "CT", "ACME", "CT CHEST"
        ds.InstanceNumber, ds.SliceLocation = i + 1, float(i)
        ds.ImagePositionPatient = [-250.0, -250.0, float(i)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.98, 0.98], 1.0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.Rows = ds.Columns = 512
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        pixels = (body + rng.integers(0, 60, (512, 512))).astype(np.uint16)
        ds.PixelData = pixels.tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(folder / f"ct{i:04d}.dcm", enforce_file_format=True)


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 2) if seconds > 0 else 0.0


def run_ours(src: Path, out: Path, config: DeidConfig) -> float:
    start = time.perf_counter()
    report = run_batch(src, out, config, KEY)
    elapsed = time.perf_counter() - start
    assert report.count("ok") == len(report.outcomes), [o.detail for o in report.outcomes]
    return rate(len(report.outcomes), elapsed)


def run_dicognito(src: Path, out: Path) -> float:
    from dicognito.anonymizer import Anonymizer

    files = sorted(src.iterdir())
    anonymizer = Anonymizer(seed="bench")
    start = time.perf_counter()
    for path in files:
        ds = pydicom.dcmread(path)
        anonymizer.anonymize(ds)
        ds.save_as(out / path.name)
    return rate(len(files), time.perf_counter() - start)


def run_pydicom_deid(src: Path, out: Path) -> float:
    from deid.dicom import replace_identifiers

    logging.getLogger("deid").setLevel(logging.ERROR)
    files = [str(p) for p in sorted(src.iterdir())]
    start = time.perf_counter()
    replace_identifiers(dicom_files=files, save=True, output_folder=str(out), overwrite=True,
                        remove_private=True)
    return rate(len(files), time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--ocr-files", type=int, default=6)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    root = Path(tempfile.mkdtemp(prefix="bench-deid-"))
    try:
        src, ocr_src = root / "in", root / "in-ocr"
        src.mkdir()
        ocr_src.mkdir()
        make_ct(src, args.files)
        for path in sorted(src.iterdir())[: args.ocr_files]:
            shutil.copy(path, ocr_src / path.name)
        basic = run_ours(src, root / "o1", DeidConfig(project="BENCH"))
        ocr = run_ours(ocr_src, root / "o2",
                       DeidConfig(project="BENCH", options=frozenset({Option.CLEAN_PIXEL_DATA})))
        (root / "o3").mkdir()
        dicognito = run_dicognito(src, root / "o3")
        (root / "o4").mkdir()
        pydeid = run_pydicom_deid(src, root / "o4")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({
        "bench": "deid", "image": "CT 512x512 16-bit", "files": args.files,
        "ocr_files": args.ocr_files,
        "dicomvault_basic_files_per_s": basic,
        "dicomvault_basic_ocr_files_per_s": ocr,
        "dicognito_files_per_s": dicognito,
        "pydicom_deid_files_per_s": pydeid,
        "basic_vs_dicognito": round(basic / dicognito, 3) if dicognito else None,
        "basic_vs_deid": round(basic / pydeid, 3) if pydeid else None,
        "ocr_vs_dicognito": round(ocr / dicognito, 3) if dicognito else None,
        "ocr_vs_deid": round(ocr / pydeid, 3) if pydeid else None,
    }))


if __name__ == "__main__":
    main()
