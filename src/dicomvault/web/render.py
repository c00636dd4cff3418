"""Rendered and thumbnail resources (PS3.18 8.3.5.1 / 9.?): pixels → JPEG or PNG.

Window/level from the ``window=center,width[,function]`` query parameter
(8.3.5.1.3), else the dataset's first VOI window, else the frame's range.
"""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, pixel_array

from dicomvault.errors import InvalidInputError, NotFoundError

_NUMBER = r"-?\d+(?:\.\d+)?"
_WINDOW = re.compile(rf"^({_NUMBER}),({_NUMBER})(?:,(linear|linear_exact|sigmoid))?$", re.IGNORECASE)
_VIEWPORT = re.compile(r"^(\d{1,5}),(\d{1,5})$")
MAX_VIEWPORT = 4096


def parse_window(value: str | None) -> tuple[float, float, str] | None:
    if value is None:
        return None
    m = _WINDOW.match(value.strip())
    if not m or float(m.group(2)) <= 0:
        raise InvalidInputError("window must be center,width[,linear|linear_exact|sigmoid] (width > 0)")
    return float(m.group(1)), float(m.group(2)), (m.group(3) or "linear").lower()


def parse_viewport(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    m = _VIEWPORT.match(value.strip())
    if not m or not (0 < int(m.group(1)) <= MAX_VIEWPORT and 0 < int(m.group(2)) <= MAX_VIEWPORT):
        raise InvalidInputError(f"viewport must be width,height (1-{MAX_VIEWPORT})")
    return int(m.group(1)), int(m.group(2))


def parse_quality(value: str | None) -> int:
    if value is None:
        return 90
    if not value.isdigit() or not 1 <= int(value) <= 100:
        raise InvalidInputError("quality must be 1-100")
    return int(value)


def _first(value: object) -> float | None:
    """First value of a possibly multi-valued DS (WindowCenter/Width)."""
    if value is None:
        return None
    if not isinstance(value, str | bytes | int | float):
        try:
            value = value[0]  # type: ignore[index]
        except (TypeError, IndexError):
            return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _window(arr: np.ndarray, window: tuple[float, float, str] | None, ds: Dataset) -> np.ndarray:
    if window is None:
        center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
        window = (center, width, "linear") if center is not None and width and width > 0 else None
    if window is None:
        lo, hi = float(arr.min()), float(arr.max())
        out = (arr - lo) / ((hi - lo) or 1.0)
    else:
        c, w, func = window
        if func == "sigmoid":
            out = 1.0 / (1.0 + np.exp(-4.0 * (arr - c) / w))
        elif func == "linear_exact":
            out = (arr - (c - w / 2)) / w
        else:  # PS3.3 C.11.2.1.2.1
            out = (arr - (c - 0.5)) / (w - 1 or 1) + 0.5
    return np.clip(out * 255.0, 0, 255).astype(np.uint8)


def render(ds: Dataset, frame: int, media_type: str, *, window: tuple[float, float, str] | None = None,
           viewport: tuple[int, int] | None = None, quality: int = 90) -> bytes:
    """One frame (1-based) as an 8-bit image in ``media_type``."""
    if "PixelData" not in ds:
        raise NotFoundError("the instance has no pixel data")
    count = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if not 1 <= frame <= count:
        raise NotFoundError("no such frame")
    arr = pixel_array(ds, index=frame - 1) if count > 1 else ds.pixel_array
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if int(getattr(ds, "SamplesPerPixel", 1)) == 1:
        values = apply_modality_lut(arr, ds).astype(np.float64)
        img8 = _window(values, window, ds)
        if photometric == "MONOCHROME1":
            img8 = 255 - img8
        image = Image.fromarray(img8, mode="L")
    else:
        if arr.dtype != np.uint8:
            arr = _window(arr.astype(np.float64), window, ds)
        image = Image.fromarray(arr.astype(np.uint8), mode="RGB")
    if viewport:
        image.thumbnail(viewport)
    buf = io.BytesIO()
    if media_type == "image/png":
        image.save(buf, format="PNG")
    else:
        image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
