"""Verification pass: re-scan an output for residual identifiers (PS3.15 E.1.1).

Every data element at every depth (file meta, sequences, private blocks,
binary non-pixel values) is searched for the identifying values collected
from the input; under Clean Pixel Data every frame is OCRed again and any word
that equals an identifying token fails the check.  Findings name *where* a
residue is, never *what* it is (no PHI in reports or logs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset

from dicomvault.deid.identifiers import TEXT_VRS, IdentifierSet, split_values, words_match
from dicomvault.deid.ocr import OcrEngine, render_frame

if TYPE_CHECKING:
    from dicomvault.deid.pixels import PixelCleanReport
    from dicomvault.deid.profile import DeidConfig

PIXEL_DATA = 0x7FE00010


@dataclass(frozen=True)
class Finding:
    """Where a residual identifier was found and why the output is refused."""

    where: str
    reason: str


@dataclass
class VerificationReport:
    """The verification outcome; ``passed`` is False when anything identifying remains."""

    findings: list[Finding] = field(default_factory=list)
    ocr_checked: bool = False

    @property
    def passed(self) -> bool:
        return not self.findings


def _scan(ds: Dataset, ids: IdentifierSet, parent: str, out: list[Finding]) -> None:
    for elem in ds:
        tag = int(elem.tag)
        where = f"{parent}>({tag >> 16:04X},{tag & 0xFFFF:04X})" if parent else \
            f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        if tag == PIXEL_DATA or (0x6000 <= tag >> 16 <= 0x601E and tag & 0xFFFF == 0x3000):
            continue
        if elem.VR == "SQ":
            for index, item in enumerate(elem.value or []):
                _scan(item, ids, f"{where}[{index}]", out)
            continue
        if elem.VR in TEXT_VRS or elem.VR == "UN" and isinstance(elem.value, str):
            texts = split_values(elem.value)
        elif isinstance(elem.value, bytes) and elem.VR in ("OB", "UN", "UT", "UC"):
            texts = [elem.value.decode("latin-1")]
        else:
            continue
        if any(ids.search(t) for t in texts):
            out.append(Finding(where, "an identifying value of the input remains"))


def verify_output(
    ds: Dataset,
    ids: IdentifierSet,
    config: DeidConfig,
    *,
    ocr_engine: OcrEngine | None = None,
    pixel_report: PixelCleanReport | None = None,
    source: Dataset | None = None,
) -> VerificationReport:
    """Re-scan ``ds`` for the input's identifying values; OCR the pixels when given an engine."""
    from dicomvault.deid.options import Option
    from dicomvault.deid.pixels import decode_frames

    findings: list[Finding] = []
    _scan(ds, ids, "", findings)
    if getattr(ds, "file_meta", None) is not None:
        _scan(ds.file_meta, ids, "meta", findings)
    if PIXEL_DATA in ds and Option.CLEAN_PIXEL_DATA not in config.options and \
            str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        findings.append(Finding("(0028,0301)",
                                "burned-in annotation present and Clean Pixel Data not selected"))
    if Option.CLEAN_VISUAL_FEATURES in config.options and PIXEL_DATA in ds and not (
            pixel_report and pixel_report.visual_rules_applied):
        findings.append(Finding("(7FE0,0010)",
                                "no recognizable-visual-features rule matches this image"))
    checked = False
    if ocr_engine is not None and PIXEL_DATA in ds:
        tokens = ids.tokens()
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
        frames = decode_frames(ds)
        skip = pixel_report.ocr_clean_frames if pixel_report is not None else set()
        for index in range(frames.shape[0]):
            if index in skip:
                continue  # the cleaner's last OCR pass over this very frame read nothing
            words = [w.text for w in ocr_engine.words(render_frame(frames[index], photometric))]
            if words_match(words, tokens):
                findings.append(Finding(f"pixels frame {index + 1}",
                                        "OCR reads an identifying value in the pixels"))
        checked = True
    return VerificationReport(findings, checked)
