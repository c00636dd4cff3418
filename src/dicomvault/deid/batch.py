"""Folder/file runner: de-identify many files, one outcome per file, atomic outputs.

A bad file (unreadable, not DICOM, truncated pixel data) is reported and the
batch goes on.  Each output is written to a temporary file in the target
folder, fsynced and renamed into place, so a crash or a refusal never leaves a
half-written or unverified file.  Output names are derived from the new SOP
Instance UID, never from input names (which may hold PHI).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicomvault.deid.engine import deidentify
from dicomvault.deid.ocr import OcrEngine
from dicomvault.deid.profile import DeidConfig
from dicomvault.deid.pseudonym import MappingRecord, PseudonymKeys
from dicomvault.errors import DicomVaultError

Status = Literal["ok", "refused", "error"]
Progress = Callable[[int, int, Path], None]


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one input file (``detail`` never carries dataset values)."""

    source: Path
    status: Status
    detail: str = ""
    output: Path | None = None


@dataclass
class BatchReport:
    """Outcomes of a batch and the mapping records of the released files."""

    outcomes: list[FileOutcome] = field(default_factory=list)
    mappings: list[MappingRecord] = field(default_factory=list)

    def count(self, status: Status) -> int:
        return sum(1 for o in self.outcomes if o.status == status)


def iter_inputs(path: Path) -> Iterator[Path]:
    """The files to process: ``path`` itself, or every file under it (sorted, hidden skipped)."""
    if path.is_file():
        yield path
        return
    for item in sorted(path.rglob("*")):
        if item.is_file() and not any(p.startswith(".") for p in item.relative_to(path).parts):
            yield item


def check_pixel_data(ds: Dataset) -> None:
    """Refuse native pixel data shorter than Rows×Columns×Samples×Bits×Frames (PS3.5 8.1.1)."""
    from dicomvault.errors import InvalidInputError

    if "PixelData" not in ds:
        return
    elem = ds["PixelData"]
    if "TransferSyntaxUID" not in ds.file_meta:
        raise InvalidInputError("file meta information has no transfer syntax")
    if ds.file_meta.TransferSyntaxUID.is_compressed or elem.is_undefined_length:
        from pydicom.encaps import generate_fragmented_frames

        try:
            frames = sum(1 for _ in generate_fragmented_frames(
                elem.value, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)))
        except Exception:  # noqa: BLE001 - any parse failure is truncation/corruption
            raise InvalidInputError("encapsulated pixel data is truncated or corrupt") from None
        if frames < int(ds.get("NumberOfFrames", 1) or 1):
            raise InvalidInputError("encapsulated pixel data has fewer frames than declared")
        return
    if "Rows" not in ds or "Columns" not in ds or "BitsAllocated" not in ds:
        raise InvalidInputError("pixel data without a complete Image Pixel module")
    samples = int(ds.get("SamplesPerPixel", 1))
    if str(ds.get("PhotometricInterpretation", "")) == "YBR_FULL_422":
        samples = 2  # PS3.3 C.7.6.3.1.2: two samples per pixel pair after subsampling
    expected = (int(ds.Rows) * int(ds.Columns) * samples
                * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.BitsAllocated)) // 8
    if len(elem.value or b"") < expected:
        raise InvalidInputError("pixel data is truncated")


def read_dicom(source: Path) -> Dataset:
    """Read a Part 10 file; a file without preamble/meta is accepted only if it is an instance."""
    try:
        return pydicom.dcmread(source)
    except InvalidDicomError:
        ds = pydicom.dcmread(source, force=True)
        if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
            raise
        return ds


def write_atomic(ds: Dataset, target: Path) -> None:
    """Write ``ds`` to ``target`` via temp file + fsync + rename (never half-written)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".deid-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            ds.save_as(handle, enforce_file_format=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def deidentify_file(source: Path, out_dir: Path, config: DeidConfig,
                    keys: PseudonymKeys | bytes, ocr_engine: OcrEngine | None = None,
                    target: Path | None = None) -> tuple[FileOutcome, list[MappingRecord]]:
    """De-identify one file into ``out_dir`` (or exactly ``target``); never raises for bad input."""
    try:
        ds = read_dicom(source)
        check_pixel_data(ds)
        result = deidentify(ds, config, keys, ocr_engine=ocr_engine)
        if not result.released:
            reasons = "; ".join(sorted({f"{f.where}: {f.reason}"
                                        for f in result.verification.findings}))
            return FileOutcome(source, "refused", reasons), []
        path = target or out_dir / f"{result.dataset.SOPInstanceUID}.dcm"
        write_atomic(result.dataset, path)
        return FileOutcome(source, "ok", "", path), result.mappings
    except InvalidDicomError:
        return FileOutcome(source, "error", "not a DICOM file"), []
    except DicomVaultError as exc:
        return FileOutcome(source, "error", exc.detail), []
    except (OSError, EOFError) as exc:
        return FileOutcome(source, "error", f"unreadable ({type(exc).__name__})"), []
    except Exception as exc:  # noqa: BLE001 - one bad file never stops the batch
        return FileOutcome(source, "error", f"cannot process ({type(exc).__name__})"), []


def run_batch(source: Path, out: Path, config: DeidConfig, keys: PseudonymKeys | bytes,
              progress: Progress | None = None,
              ocr_engine: OcrEngine | None = None) -> BatchReport:
    """De-identify ``source`` (a file or a folder tree) into ``out``."""
    files = list(iter_inputs(source))
    single_target = out if source.is_file() and out.suffix.lower() == ".dcm" else None
    report = BatchReport()
    for index, path in enumerate(files, start=1):
        outcome, mappings = deidentify_file(path, out if single_target is None else out.parent,
                                            config, keys, ocr_engine, single_target)
        report.outcomes.append(outcome)
        report.mappings.extend(mappings)
        if progress is not None:
            progress(index, len(files), path)
    return report
