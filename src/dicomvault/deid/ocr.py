"""Burned-in text detection with Tesseract (PS3.15 E.3.1 Clean Pixel Data Option).

Each frame is rendered to 8 bits the way a viewer would show it (min–max
window, MONOCHROME1 inverted, colour kept), upscaled so that small overlay
fonts reach Tesseract's preferred glyph height, and searched in sparse-text
mode; the boxes of recognised words are returned in frame coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from dicomvault.errors import UnavailableError

Box = tuple[int, int, int, int]  # x, y, width, height
#: A "word" taller than this fraction of the frame is not burned-in text.
MAX_WORD_HEIGHT = 0.25


@dataclass(frozen=True)
class Word:
    """A recognised word and its box in frame coordinates."""

    text: str
    confidence: float
    box: Box


@lru_cache(maxsize=1)
def tesseract_available() -> bool:
    """Whether the Tesseract binary (Debian ``tesseract-ocr``) can be run."""
    try:
        import pytesseract

        pytesseract.get_tesseract_version()
    except Exception:  # noqa: BLE001 - any failure means "not available"
        return False
    return True


def render_frame(frame: np.ndarray, photometric: str) -> np.ndarray:
    """Render one frame to uint8 (grey or RGB) for OCR (PS3.3 C.7.6.3.1.2 photometrics)."""
    data = np.asarray(frame)
    if data.ndim == 3:  # colour, already RGB after decoding
        if data.dtype == np.uint8:
            return data
        top = float(data.max()) or 1.0
        return (data.astype(np.float32) * (255.0 / top)).astype(np.uint8)
    lo, hi = float(data.min()), float(data.max())
    scaled = (data.astype(np.float32) - lo) * (255.0 / (hi - lo if hi > lo else 1.0))
    out = scaled.clip(0, 255).astype(np.uint8)
    return 255 - out if photometric == "MONOCHROME1" else out


class OcrEngine:
    """Tesseract via pytesseract; ``detect`` returns padded word boxes."""

    def __init__(self, lang: str = "eng", min_confidence: float = 30.0, scale: int = 2,
                 pad: int = 3) -> None:
        self.lang = lang
        self.min_confidence = min_confidence
        self.scale = scale
        self.pad = pad

    def words(self, image: np.ndarray) -> list[Word]:
        """Words Tesseract recognises in a rendered uint8 image."""
        if not tesseract_available():
            raise UnavailableError("Tesseract OCR is not installed (Debian package tesseract-ocr)")
        import pytesseract

        pil = Image.fromarray(image)
        if pil.mode not in ("L", "RGB"):
            pil = pil.convert("RGB")
        if self.scale > 1:
            pil = pil.resize((pil.width * self.scale, pil.height * self.scale),
                             Image.Resampling.BICUBIC)
        data = pytesseract.image_to_data(
            pil, lang=self.lang, config="--psm 11", output_type=pytesseract.Output.DICT
        )
        found: list[Word] = []
        for i, text in enumerate(data["text"]):
            text = (text or "").strip()
            conf = float(data["conf"][i])
            if not text or conf < self.min_confidence or not any(c.isalnum() for c in text):
                continue
            s = self.scale
            x0, y0 = data["left"][i] // s, data["top"][i] // s
            x1 = -(-(data["left"][i] + data["width"][i]) // s)
            y1 = -(-(data["top"][i] + data["height"][i]) // s)
            box = (x0, y0, x1 - x0, y1 - y0)
            found.append(Word(text, conf, box))
        return found

    def detect(self, image: np.ndarray) -> list[Box]:
        """Padded boxes of all recognised words, clipped to the image."""
        rows, cols = image.shape[:2]
        boxes: list[Box] = []
        for word in self.words(image):
            x, y, w, h = word.box
            if h > max(rows * MAX_WORD_HEIGHT, 8):
                continue  # not a text line: an image structure Tesseract took for a glyph
            pad = max(self.pad, h // 4)  # antialiased edges Tesseract's binarisation drops
            x0, y0 = max(0, x - pad), max(0, y - pad)
            x1, y1 = min(cols, x + w + pad), min(rows, y + h + pad)
            boxes.append((x0, y0, x1 - x0, y1 - y0))
        return boxes
