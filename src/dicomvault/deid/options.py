"""The Basic Application Level Confidentiality Profile and its options (PS3.15 E.1, E.3).

Each option is identified by its code in PS3.16 CID 7050 "De-identification
Method" (coding scheme DCM); the same code keys the option's column in the
shipped copy of Table E.1-1, so an option changes exactly what its column says.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from dicomvault.errors import InvalidInputError

CODING_SCHEME = "DCM"


@dataclass(frozen=True)
class MethodCode:
    """One CID 7050 code (PS3.16): value and meaning as written in the Code Sequence."""

    value: str
    meaning: str


BASIC_PROFILE = MethodCode("113100", "Basic Application Confidentiality Profile")


class Option(StrEnum):
    """The options of PS3.15 E.3 (names used on the CLI and in options files)."""

    CLEAN_PIXEL_DATA = "clean-pixel-data"
    CLEAN_VISUAL_FEATURES = "clean-recognizable-visual-features"
    CLEAN_GRAPHICS = "clean-graphics"
    CLEAN_STRUCTURED_CONTENT = "clean-structured-content"
    CLEAN_DESCRIPTORS = "clean-descriptors"
    RETAIN_FULL_DATES = "retain-longitudinal-full-dates"
    RETAIN_MODIFIED_DATES = "retain-longitudinal-modified-dates"
    RETAIN_PATIENT_CHARACTERISTICS = "retain-patient-characteristics"
    RETAIN_DEVICE_IDENTITY = "retain-device-identity"
    RETAIN_UIDS = "retain-uids"
    RETAIN_SAFE_PRIVATE = "retain-safe-private"
    RETAIN_INSTITUTION_IDENTITY = "retain-institution-identity"


#: PS3.16 CID 7050 codes of each option.
OPTION_CODES: dict[Option, MethodCode] = {
    Option.CLEAN_PIXEL_DATA: MethodCode("113101", "Clean Pixel Data Option"),
    Option.CLEAN_VISUAL_FEATURES: MethodCode(
        "113102", "Clean Recognizable Visual Features Option"
    ),
    Option.CLEAN_GRAPHICS: MethodCode("113103", "Clean Graphics Option"),
    Option.CLEAN_STRUCTURED_CONTENT: MethodCode("113104", "Clean Structured Content Option"),
    Option.CLEAN_DESCRIPTORS: MethodCode("113105", "Clean Descriptors Option"),
    Option.RETAIN_FULL_DATES: MethodCode(
        "113106", "Retain Longitudinal Temporal Information Full Dates Option"
    ),
    Option.RETAIN_MODIFIED_DATES: MethodCode(
        "113107", "Retain Longitudinal Temporal Information Modified Dates Option"
    ),
    Option.RETAIN_PATIENT_CHARACTERISTICS: MethodCode(
        "113108", "Retain Patient Characteristics Option"
    ),
    Option.RETAIN_DEVICE_IDENTITY: MethodCode("113109", "Retain Device Identity Option"),
    Option.RETAIN_UIDS: MethodCode("113110", "Retain UIDs Option"),
    Option.RETAIN_SAFE_PRIVATE: MethodCode("113111", "Retain Safe Private Option"),
    Option.RETAIN_INSTITUTION_IDENTITY: MethodCode(
        "113112", "Retain Institution Identity Option"
    ),
}

_ALIASES = {
    "clean-visual-features": Option.CLEAN_VISUAL_FEATURES,
    "retain-full-dates": Option.RETAIN_FULL_DATES,
    "retain-modified-dates": Option.RETAIN_MODIFIED_DATES,
}


def parse_option(text: str) -> Option:
    """An option from its name (``retain-uids``), a short alias or its CID 7050 code."""
    key = text.strip().lower().replace("_", "-").replace(" ", "-")
    for option, code in OPTION_CODES.items():
        if key in (option.value, code.value):
            return option
    if key in _ALIASES:
        return _ALIASES[key]
    raise InvalidInputError(f"unknown de-identification option: {text!r}")


def validate_options(options: frozenset[Option]) -> None:
    """Reject combinations the profile forbids (PS3.15 E.3.6: one of the two date options)."""
    if {Option.RETAIN_FULL_DATES, Option.RETAIN_MODIFIED_DATES} <= options:
        raise InvalidInputError(
            "retain-longitudinal-full-dates and retain-longitudinal-modified-dates "
            "are mutually exclusive"
        )
