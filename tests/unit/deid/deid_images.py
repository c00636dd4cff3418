"""Images with known text drawn at known places, as DICOM instances (for OCR tests)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from tests.unit.deid.deid_builders import add_pixels

DEJAVU = "/usr/share/fonts/truetype/dejavu/"
TEXTS = [((16, 24), "SMITHSON JOHN"), ((40, 196), "MRN7734021")]


def font(name: str) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's bitmap default, PIL's scalable default, or a DejaVu TrueType font."""
    if name == "pil-default":
        return ImageFont.load_default_imagefont()
    if name.startswith("pil-default-"):
        return ImageFont.load_default(size=int(name.rsplit("-", 1)[1]))
    file, size = name.split(":")
    return ImageFont.truetype(DEJAVU + file, int(size))


@dataclass
class Drawn:
    dataset: Dataset
    pixels: np.ndarray  # (frames, rows, cols[, 3]) as stored
    glyphs: np.ndarray  # bool, same leading shape: pixels that belong to text
    boxes: list[list[tuple[int, int, int, int]]]  # per frame: x0, y0, x1, y1


def _background(size: int, level: int) -> np.ndarray:
    ramp = np.linspace(-8, 8, size)
    return np.clip(level + ramp[None, :] + ramp[:, None], 0, 255)


def draw_instance(font_name: str, fg: int | tuple[int, int, int],
                  bg: int | tuple[int, int, int], colour: bool = False, frames: int = 1,
                  size: int = 256, sixteen_bit: bool = False) -> Drawn:
    """Text drawn on a gradient background; frame i has its texts moved down by 8*i."""
    pixels, glyphs, boxes = [], [], []
    for index in range(frames):
        if colour:
            assert isinstance(bg, tuple)
            base = np.stack([_background(size, c) for c in bg], axis=-1).astype(np.uint8)
            img = Image.fromarray(base, "RGB")
        else:
            assert isinstance(bg, int)
            img = Image.fromarray(_background(size, bg).astype(np.uint8), "L")
        before = np.array(img)
        draw = ImageDraw.Draw(img)
        frame_boxes = []
        for (x, y), text in TEXTS:
            pos = (x, y + 8 * index)
            draw.text(pos, text, fill=fg, font=font(font_name))
            frame_boxes.append(tuple(int(v) for v in draw.textbbox(pos, text,
                                                                   font=font(font_name))))
        after = np.array(img)
        diff = after != before
        glyphs.append(diff.any(axis=-1) if colour else diff)
        pixels.append(after.astype(np.uint16) * 16 if sixteen_bit else after)
        boxes.append(frame_boxes)
    arr = np.stack(pixels)
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.543.77.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.543.77.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.543.77.3"
    ds.PatientName = "SMITHSON^JOHN"
    ds.PatientID = "MRN7734021"
    ds.Modality = "OT"
    ds.BurnedInAnnotation = "YES"
    add_pixels(ds, arr if frames > 1 else arr[0], "RGB" if colour else None)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return Drawn(ds, arr, np.stack(glyphs), boxes)


def outside_mask(shape: tuple[int, int], boxes: list[tuple[int, int, int, int]],
                 margin: int) -> np.ndarray:
    """True where a pixel is farther than ``margin`` from every drawn text box."""
    mask = np.ones(shape, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[max(0, y0 - margin):y1 + margin, max(0, x0 - margin):x1 + margin] = False
    return mask
