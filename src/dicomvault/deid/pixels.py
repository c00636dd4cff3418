"""Pixel cleaning: declarative region rules and OCR masking (PS3.15 E.3.1, E.3.2).

Region rules (a readable TOML file, in the spirit of RSNA CTP's pixel
anonymizer scripts) blank fixed rectangles for a given modality /
manufacturer / model / image size.  OCR boxes are blanked per frame.  The
result is written back as native (uncompressed) little-endian pixel data:
compressed input changes transfer syntax to Explicit VR Little Endian, and
YBR colour is written as RGB (PS3.5 8.2, PS3.3 C.7.6.3.1.2).

Rule file::

    [[rule]]
    name = "ACME US header bar"
    purpose = "text"            # or "visual-features" (Clean Recognizable Visual Features)
    modality = "US"             # each matcher is optional; strings match case-insensitively
    manufacturer = "ACME"       # substring of Manufacturer (0008,0070)
    model = "Sono"              # substring of Manufacturer's Model Name (0008,1090)
    rows = 480
    columns = 640
    regions = [[0, 0, 640, 40]] # x, y, width, height
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from dicomvault.deid.ocr import Box
from dicomvault.errors import InvalidInputError


@dataclass(frozen=True)
class RegionRule:
    """Rectangles to blank on images that match every given matcher."""

    name: str
    regions: tuple[Box, ...]
    purpose: Literal["text", "visual-features"] = "text"
    modality: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    rows: int | None = None
    columns: int | None = None

    def matches(self, ds: Dataset) -> bool:
        """Whether this rule applies to ``ds`` (modality exact, vendor/model substring)."""
        def text(keyword: str) -> str:
            return str(ds.get(keyword, "") or "").upper()

        return (
            (self.modality is None or text("Modality") == self.modality.upper())
            and (self.manufacturer is None or self.manufacturer.upper() in text("Manufacturer"))
            and (self.model is None or self.model.upper() in text("ManufacturerModelName"))
            and (self.rows is None or ds.get("Rows") == self.rows)
            and (self.columns is None or ds.get("Columns") == self.columns)
        )


@dataclass(frozen=True)
class RegionRules:
    """An ordered set of region rules."""

    rules: tuple[RegionRule, ...] = field(default_factory=tuple)

    @classmethod
    def from_toml(cls, text: str) -> RegionRules:
        """Parse a rule file (format in the module docstring)."""
        try:
            doc = tomllib.loads(text)
            rules = []
            for i, raw in enumerate(doc.get("rule", [])):
                regions = tuple(tuple(int(v) for v in r) for r in raw["regions"])
                if any(len(r) != 4 or r[2] <= 0 or r[3] <= 0 for r in regions):
                    raise ValueError("region must be [x, y, width, height] with positive size")
                purpose = raw.get("purpose", "text")
                if purpose not in ("text", "visual-features"):
                    raise ValueError("purpose must be 'text' or 'visual-features'")
                rules.append(RegionRule(
                    name=str(raw.get("name", f"rule {i + 1}")),
                    regions=regions,  # type: ignore[arg-type]
                    purpose=purpose,
                    modality=raw.get("modality"),
                    manufacturer=raw.get("manufacturer"),
                    model=raw.get("model"),
                    rows=raw.get("rows"),
                    columns=raw.get("columns"),
                ))
        except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"region rules: {exc}") from None
        return cls(tuple(rules))

    @classmethod
    def load(cls, path: Path) -> RegionRules:
        try:
            return cls.from_toml(path.read_text(encoding="utf-8"))
        except OSError:
            raise InvalidInputError(f"cannot read region rules {path.name}") from None

    @classmethod
    def default(cls) -> RegionRules:
        """The rules shipped in ``deid/data/region_rules.toml``."""
        return cls.from_toml(
            resources.files("dicomvault.deid").joinpath("data/region_rules.toml").read_text("utf-8")
        )

    def matching(self, ds: Dataset, purpose: str) -> list[RegionRule]:
        return [r for r in self.rules if r.purpose == purpose and r.matches(ds)]


@dataclass
class PixelCleanReport:
    """What the pixel cleaner did: boxes blanked per frame, rules used, re-encoding."""

    boxes: dict[int, list[Box]] = field(default_factory=dict)
    rules_applied: list[str] = field(default_factory=list)
    visual_rules_applied: list[str] = field(default_factory=list)
    #: Frames whose last OCR pass found no text: re-reading them would find nothing either.
    ocr_clean_frames: set[int] = field(default_factory=set)
    reencoded: bool = False
    transfer_syntax_changed: bool = False


def decode_frames(ds: Dataset) -> np.ndarray:
    """All frames as one array (frames, rows, cols[, samples]); raises on bad pixel data."""
    try:
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - decoder errors vary by plugin
        raise InvalidInputError(f"pixel data cannot be decoded ({type(exc).__name__})") from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1))
    shape = (frames, ds.Rows, ds.Columns) + ((spp,) if spp > 1 else ())
    return np.array(arr, copy=True).reshape(shape)


MAX_OCR_PASSES = 3


def _blank(frame: np.ndarray, boxes: list[Box], fill: int | float) -> None:
    for x, y, w, h in boxes:
        frame[max(0, y):max(0, y + h), max(0, x):max(0, x + w)] = fill


def _fill_value(frame: np.ndarray, photometric: str) -> int | float:
    if frame.ndim == 3:
        return 0
    return frame.max() if photometric == "MONOCHROME1" else frame.min()


def clean_pixel_data(
    ds: Dataset,
    rules: RegionRules,
    detector: Callable[[np.ndarray, str], list[Box]] | None,
    visual_features: bool = False,
) -> PixelCleanReport:
    """Blank rule regions and detected text in every frame, then write native pixels back."""
    report = PixelCleanReport()
    frames = decode_frames(ds)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if frames.ndim == 4 and photometric.startswith("YBR"):
        photometric = "RGB"  # pydicom converts YBR to RGB when decoding
    static: list[Box] = []
    for rule in rules.matching(ds, "text"):
        static.extend(rule.regions)
        report.rules_applied.append(rule.name)
    if visual_features:
        for rule in rules.matching(ds, "visual-features"):
            static.extend(rule.regions)
            report.visual_rules_applied.append(rule.name)
    for index in range(frames.shape[0]):
        frame = frames[index]
        fill = _fill_value(frame, photometric)
        boxes = list(static)
        _blank(frame, boxes, fill)
        # OCR again on the masked frame: a word hidden by a neighbour is found next pass.
        for _ in range(MAX_OCR_PASSES if detector is not None else 0):
            detected = detector(frame, photometric)  # type: ignore[misc]
            if not detected:
                report.ocr_clean_frames.add(index)
                break
            found = [b for b in detected if b not in boxes]
            if not found:
                break
            boxes.extend(found)
            _blank(frame, found, fill)
        if boxes:
            report.boxes[index] = boxes
    _write_native(ds, frames, photometric, report)
    return report


_SWAP_WIDTH = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def _swap_other_words(ds: Dataset) -> None:
    """Byte-swap OW/OF/OL/OD/OV values read big-endian (PS3.5 7.3), at every depth."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or []:
                _swap_other_words(item)
        elif elem.VR in _SWAP_WIDTH and elem.tag != 0x7FE00010 and isinstance(elem.value, bytes):
            width = _SWAP_WIDTH[elem.VR]
            usable = len(elem.value) - len(elem.value) % width
            data = np.frombuffer(elem.value[:usable], dtype=f"u{width}").byteswap()
            elem.value = data.tobytes() + elem.value[usable:]


def _to_explicit_little(ds: Dataset, report: PixelCleanReport) -> None:
    if ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian:
        return
    if not ds.file_meta.TransferSyntaxUID.is_little_endian:
        _swap_other_words(ds)
    report.transfer_syntax_changed = True
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.set_original_encoding(False, True, ds.original_character_set)


def _write_native(ds: Dataset, frames: np.ndarray, photometric: str,
                  report: PixelCleanReport) -> None:
    """Store ``frames`` as native little-endian pixel data (PS3.5 8.2, A.1)."""
    bits_allocated = int(ds.BitsAllocated)
    if bits_allocated == 1:  # PS3.5 8.1.1: bit-packed, little-endian bit order
        from pydicom.pixels import pack_bits

        ds.PixelData = pack_bits(frames.reshape(-1))
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = False
        _to_explicit_little(ds, report)
        report.reencoded = True
        return
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    dtype = np.dtype(("i" if signed else "u") + str(bits_allocated // 8)).newbyteorder("<")
    data = frames.astype(dtype, copy=False)
    ds.PixelData = data.tobytes()
    ds["PixelData"].VR = "OB" if bits_allocated == 8 else "OW"
    ds["PixelData"].is_undefined_length = False
    ds.PhotometricInterpretation = photometric
    if frames.ndim == 4:
        ds.PlanarConfiguration = 0
    _to_explicit_little(ds, report)
    report.reencoded = True
