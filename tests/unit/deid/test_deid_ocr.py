"""Burned-in text masking with Tesseract (PS3.15 E.3.1 Clean Pixel Data Option).

Known text is drawn at known places in several fonts, sizes and contrasts on
monochrome and colour images; after de-identification every glyph pixel is
blanked, every pixel away from the text is untouched, and OCR finds nothing.
"""

from __future__ import annotations

import numpy as np
import pytest

from dicomvault.deid import DeidConfig, Option, deidentify
from dicomvault.deid.ocr import tesseract_available
from dicomvault.deid.pixels import decode_frames
from tests.unit.deid.deid_builders import KEY, full_table_dataset, roundtrip
from tests.unit.deid.deid_images import draw_instance, font, outside_mask

pytestmark = pytest.mark.skipif(not tesseract_available(),
                                reason="Debian package tesseract-ocr is required")

CLEAN = DeidConfig(options=frozenset({Option.CLEAN_PIXEL_DATA}), project="OCR")
MARGIN = 10  # boxes are padded by max(3, height/4); nothing farther may change

MONO_CASES = [
    # font, foreground, background (8-bit levels before any 16-bit scaling)
    ("pil-default", 255, 0),
    ("pil-default-20", 160, 40),
    ("DejaVuSans.ttf:14", 30, 220),
    ("DejaVuSansMono-Bold.ttf:24", 255, 60),
    ("DejaVuSerif.ttf:18", 200, 90),
]
COLOUR_CASES = [
    ("pil-default-16", (255, 255, 0), (20, 20, 90)),
    ("DejaVuSans-Bold.ttf:16", (0, 255, 0), (30, 30, 30)),
    ("DejaVuSansMono.ttf:20", (20, 20, 20), (230, 200, 160)),
]


def _check(drawn, result) -> None:  # type: ignore[no-untyped-def]
    assert result.released, result.verification.findings
    assert result.verification.ocr_checked
    out = decode_frames(result.dataset)
    expected = drawn.pixels.reshape(out.shape)
    for index in range(out.shape[0]):
        frame, original = out[index], expected[index]
        glyphs = drawn.glyphs[index]
        # Boxes blanked: every glyph pixel now holds the blanking value
        # (black: the frame minimum for monochrome, 0 for colour).
        fill = 0 if original.ndim == 3 else original.min()
        assert np.all(frame[glyphs] == fill), f"frame {index}: glyph pixels left"
        # The rest untouched.
        keep = outside_mask(glyphs.shape, drawn.boxes[index], MARGIN)
        assert np.array_equal(frame[keep], original[keep]), f"frame {index}: pixels changed"
    assert result.dataset.BurnedInAnnotation == "NO"
    codes = [i.CodeValue for i in result.dataset.DeidentificationMethodCodeSequence]
    assert "113101" in codes


@pytest.mark.parametrize(("font_name", "fg", "bg"), MONO_CASES, ids=[c[0] for c in MONO_CASES])
def test_ocr_masks_text_on_monochrome_16_bit(font_name: str, fg: int, bg: int) -> None:
    drawn = draw_instance(font_name, fg, bg, sixteen_bit=True)
    _check(drawn, deidentify(drawn.dataset, CLEAN, KEY))


@pytest.mark.parametrize(("font_name", "fg", "bg"), COLOUR_CASES,
                         ids=[c[0] for c in COLOUR_CASES])
def test_ocr_masks_text_on_colour(font_name: str, fg: tuple[int, int, int],
                                  bg: tuple[int, int, int]) -> None:
    drawn = draw_instance(font_name, fg, bg, colour=True)
    _check(drawn, deidentify(drawn.dataset, CLEAN, KEY))


def test_ocr_masks_every_frame_of_multiframe() -> None:
    drawn = draw_instance("DejaVuSans.ttf:16", 250, 20, frames=3)
    result = deidentify(drawn.dataset, CLEAN, KEY)
    assert sorted(result.pixels.boxes) == [0, 1, 2]  # type: ignore[union-attr]
    _check(drawn, result)


def test_ocr_masks_text_in_compressed_input_and_changes_transfer_syntax() -> None:
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless

    drawn = draw_instance("DejaVuSansMono-Bold.ttf:20", 255, 30)
    drawn.dataset.compress(RLELossless, generate_instance_uid=False)
    result = deidentify(drawn.dataset, CLEAN, KEY)
    assert result.dataset.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert result.pixels is not None and result.pixels.transfer_syntax_changed
    _check(drawn, result)


def test_verification_refuses_text_left_by_region_rules_only() -> None:
    drawn = draw_instance("DejaVuSansMono-Bold.ttf:24", 255, 0)
    config = DeidConfig(options=frozenset({Option.CLEAN_PIXEL_DATA}), project="OCR", ocr=False)
    result = deidentify(drawn.dataset, config, KEY)
    assert not result.released
    assert [f.where for f in result.verification.findings] == ["pixels frame 1"]
    assert "SMITHSON" not in repr(result.verification)


def test_clean_graphics_clears_text_drawn_in_overlay() -> None:
    from PIL import Image, ImageDraw
    from pydicom.pixels import pack_bits

    img = Image.new("L", (256, 256), 0)
    ImageDraw.Draw(img).text((20, 100), "SMITHSON", fill=255, font=font("DejaVuSansMono-Bold.ttf:24"))
    plane = (np.array(img) > 127).astype(np.uint8)
    ds = full_table_dataset()
    ds[0x60000010].value = ds[0x60000011].value = 256
    ds[0x60003000].value = pack_bits(plane.reshape(-1))
    config = DeidConfig(options=frozenset({Option.CLEAN_GRAPHICS}), project="OV")
    out = deidentify(roundtrip(ds), config, KEY).dataset
    cleared = out.overlay_array(0x6000)
    assert plane.sum() > 100 and cleared.sum() == 0
