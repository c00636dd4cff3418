"""Re-encode a stored PS3.10 object for a negotiated transfer syntax (PS3.5 A.2 / 10).

Only what WADO-RS needs: native (implicit/explicit little endian) or a
decodable compressed syntax → Explicit VR Little Endian, and native pixel
frames out of the dataset.  Decoding uses pydicom with pylibjpeg.
"""

from __future__ import annotations

import io

import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import UID

from dicomvault.errors import InvalidInputError, NotFoundError
from dicomvault.web.negotiation import DECODABLE, EXPLICIT_LE, NATIVE_LE
from dicomvault.web.problems import NotAcceptableError


def read(part10: bytes, *, stop_before_pixels: bool = False, defer: int | None = None) -> Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(part10), stop_before_pixels=stop_before_pixels,
                               defer_size=defer)
    except Exception:  # noqa: BLE001 - a stored object should always parse; fail without detail
        raise InvalidInputError("stored object could not be parsed") from None


def to_explicit_le(part10: bytes) -> bytes:
    """The object re-encoded as Explicit VR Little Endian (decompressing if needed)."""
    ds = read(part10)
    stored = str(ds.file_meta.TransferSyntaxUID)
    if stored == EXPLICIT_LE:
        return part10
    if stored in DECODABLE:
        ds.decompress()
    elif stored not in NATIVE_LE:
        raise NotAcceptableError("this object cannot be converted to the requested transfer syntax")
    ds.file_meta.TransferSyntaxUID = UID(EXPLICIT_LE)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def frame_bytes(ds: Dataset, numbers: list[int], target_ts: str) -> list[bytes]:
    """Frames (1-based) as stored (compressed fragments or native bytes) or decoded to native."""
    if "PixelData" not in ds:
        raise NotFoundError("the instance has no pixel data")
    stored = str(ds.file_meta.TransferSyntaxUID)
    count = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if any(n < 1 or n > count for n in numbers):
        raise NotFoundError("no such frame")
    if ds.file_meta.TransferSyntaxUID.is_compressed and target_ts == stored:
        frames = list(generate_frames(ds.PixelData, number_of_frames=count))
        return [frames[n - 1] for n in numbers]
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    rows, cols = int(ds.Rows), int(ds.Columns)
    samples = int(getattr(ds, "SamplesPerPixel", 1))
    bits = int(ds.BitsAllocated)
    size = rows * cols * samples * bits // 8 if bits >= 8 else (rows * cols * samples + 7) // 8
    data: bytes = ds.PixelData
    return [bytes(data[(n - 1) * size: n * size]) for n in numbers]
