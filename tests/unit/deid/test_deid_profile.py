"""Profile/options file and option names (PS3.16 CID 7050 codes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomvault.deid import Option, load_profile_file, parse_option
from dicomvault.deid.safe_private import SafePrivateList
from dicomvault.errors import InvalidInputError


@pytest.mark.parametrize(
    ("text", "option"),
    [("retain-uids", Option.RETAIN_UIDS), ("113110", Option.RETAIN_UIDS),
     ("Retain_Safe_Private", Option.RETAIN_SAFE_PRIVATE), ("113101", Option.CLEAN_PIXEL_DATA),
     ("retain-modified-dates", Option.RETAIN_MODIFIED_DATES),
     ("113112", Option.RETAIN_INSTITUTION_IDENTITY)],
)
def test_option_parsed_from_name_alias_or_code(text: str, option: Option) -> None:
    assert parse_option(text) is option


def test_profile_file_with_own_rules_and_safe_list(tmp_path: Path) -> None:
    (tmp_path / "rules.toml").write_text('[[rule]]\nmodality = "US"\nregions = [[0, 0, 4, 4]]\n')
    (tmp_path / "safe.json").write_text(
        '{"attributes": [{"creator": "ACME 1", "group": "0009", "element": "10"}]}')
    path = tmp_path / "p.toml"
    path.write_text('project = "P"\noptions = ["113106", "clean-pixel-data"]\nocr = false\n'
                    'compound = "minimal"\nregion_rules = "rules.toml"\n'
                    'safe_private = "safe.json"\n')
    config = load_profile_file(path)
    assert config.options == {Option.RETAIN_FULL_DATES, Option.CLEAN_PIXEL_DATA}
    assert (config.project, config.ocr, config.compound) == ("P", False, "minimal")
    assert config.region_rules.rules[0].modality == "US"
    assert config.safe_private.is_safe("acme 1", 0x0009, 0x1010)


@pytest.mark.parametrize(
    "text",
    ['profile = "extended"\n', 'options = ["retain-all"]\n', 'colour = "blue"\n',
     'options = ["113106", "113107"]\n', 'compound = "maximal"\n', "not toml ["],
)
def test_bad_profile_file_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(InvalidInputError):
        load_profile_file(path)


def test_bad_safe_private_list_refused() -> None:
    with pytest.raises(InvalidInputError):
        SafePrivateList.from_json('{"attributes": [{"creator": "X"}]}')
