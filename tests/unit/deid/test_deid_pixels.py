"""Region rules, pixel re-encoding and the pixel-related refusals (PS3.15 E.3.1, E.3.2)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian

from dicomvault.deid import DeidConfig, Option, deidentify
from dicomvault.deid.pixels import RegionRules, decode_frames
from dicomvault.errors import InvalidInputError
from tests.unit.deid.deid_builders import KEY, full_table_dataset, roundtrip

RULES = RegionRules.from_toml("""
[[rule]]
name = "acme us banner"
modality = "US"
manufacturer = "acme"
model = "sono"
rows = 64
columns = 64
regions = [[0, 0, 64, 8], [50, 50, 10, 10]]

[[rule]]
name = "other vendor"
manufacturer = "OTHER"
regions = [[0, 0, 64, 64]]

[[rule]]
name = "face area"
purpose = "visual-features"
modality = "US"
regions = [[20, 20, 10, 10]]
""")


def _us_instance():  # type: ignore[no-untyped-def]
    ds = full_table_dataset()
    ds.Modality = "US"
    ds.Manufacturer = "ACME Medical"
    ds.ManufacturerModelName = "SonoStar 5"
    return roundtrip(ds)


def _config(*options: Option, **extra) -> DeidConfig:  # type: ignore[no-untyped-def]
    return DeidConfig(options=frozenset(options), project="PIX", region_rules=RULES, ocr=False,
                      **extra)


def test_region_rule_blanks_its_rectangles_only() -> None:
    source = _us_instance()
    result = deidentify(source, _config(Option.CLEAN_PIXEL_DATA), KEY)
    assert result.released, result.verification.findings
    assert result.pixels is not None and result.pixels.rules_applied == ["acme us banner"]
    before, after = decode_frames(source)[0], decode_frames(result.dataset)[0]
    mask = np.zeros(before.shape, dtype=bool)
    mask[0:8, :] = True
    mask[50:60, 50:60] = True
    assert np.all(after[mask] == before.min())
    assert np.array_equal(after[~mask], before[~mask])


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("Modality", "CT"), ("Manufacturer", "Someone"), ("ManufacturerModelName", "X1"),
     ("Rows", 32)],
)
def test_region_rule_not_applied_when_a_matcher_differs(keyword: str, value: object) -> None:
    from dicomvault.deid.pixels import RegionRule

    rule = RULES.rules[0]
    ds = _us_instance()
    setattr(ds, keyword, value)
    assert isinstance(rule, RegionRule) and not rule.matches(ds)


@pytest.mark.parametrize(
    "text",
    ["[[rule]]\nregions = [[0, 0, 0, 5]]", "[[rule]]\nname = 'x'", "[[rule]\n",
     "[[rule]]\npurpose = 'faces'\nregions = [[0, 0, 1, 1]]"],
)
def test_bad_region_rules_are_refused(text: str) -> None:
    with pytest.raises(InvalidInputError):
        RegionRules.from_toml(text)


def test_shipped_region_rules_load() -> None:
    assert RegionRules.default().rules


def test_visual_features_option_applies_matching_rule_and_is_marked() -> None:
    result = deidentify(_us_instance(), _config(Option.CLEAN_VISUAL_FEATURES), KEY)
    assert result.released
    assert result.pixels is not None and result.pixels.visual_rules_applied == ["face area"]
    assert np.all(decode_frames(result.dataset)[0][20:30, 20:30] == 0)
    codes = [i.CodeValue for i in result.dataset.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113102"]


def test_visual_features_option_without_rule_refuses_release() -> None:
    source = roundtrip(full_table_dataset())  # CT: no visual-features rule matches
    result = deidentify(source, _config(Option.CLEAN_VISUAL_FEATURES), KEY)
    assert not result.released
    assert "visual-features" in result.verification.findings[0].reason


def test_burned_in_annotation_without_clean_pixel_data_refuses_release() -> None:
    source = roundtrip(full_table_dataset())
    source.BurnedInAnnotation = "YES"
    result = deidentify(source, _config(), KEY)
    assert not result.released
    assert result.verification.findings[0].where == "(0028,0301)"


@pytest.mark.parametrize(
    "name",
    ["JPEG2000.dcm", "MR_small_RLE.dcm", "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_rle_2frame.dcm",
     "MR_small_jpeg_ls_lossless.dcm", "MR_small_bigendian.dcm", "liver_1frame.dcm",
     "SC_ybr_full_422_uncompressed.dcm"],
)
def test_cleaned_pixels_reencoded_native_and_decode(name: str) -> None:
    source = pydicom.dcmread(get_testdata_file(name))
    before = decode_frames(source)
    config = DeidConfig(options=frozenset({Option.CLEAN_PIXEL_DATA}), project="PIX", ocr=False,
                        verify=False, region_rules=RegionRules())
    result = deidentify(source, config, KEY)
    back = roundtrip(result.dataset)
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    after = decode_frames(back)
    assert after.shape == before.shape
    assert np.array_equal(after, before)  # no rule, no OCR: pixels identical after re-encoding
    assert back.BurnedInAnnotation == "NO"
