"""De-identification configuration and its TOML profile/options file.

A profile file (see docs/deidentification.md)::

    profile = "basic"                 # the only profile: PS3.15 Basic Profile
    project = "LUNG-2026"
    options = ["retain-uids", "clean-descriptors"]   # names or CID 7050 codes
    keep_mapping = true               # false: no re-identification possible
    compound = "conformant"           # or "minimal" (see docs)
    ocr = true                        # OCR text detection under clean-pixel-data
    region_rules = "rules.toml"       # relative to this file; default: shipped rules
    safe_private = "safe.json"        # default: shipped safe-private list
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from dicomvault.deid.options import Option, parse_option, validate_options
from dicomvault.deid.pixels import RegionRules
from dicomvault.deid.safe_private import SafePrivateList
from dicomvault.errors import InvalidInputError

PROFILES = ("basic",)


@dataclass(frozen=True)
class DeidConfig:
    """Everything one de-identification run needs besides the key (PS3.15 E.1, E.3)."""

    options: frozenset[Option] = frozenset()
    project: str = "default"
    #: Keep the original→pseudonym records (for authorised re-identification).
    keep_mapping: bool = True
    #: How compound action codes (X/Z, Z/D, X/Z/D, ...) resolve: "conformant" keeps the
    #: element with a zero-length/dummy value (valid whatever its IOD Type);
    #: "minimal" takes the first (most removing) alternative.
    compound: Literal["conformant", "minimal"] = "conformant"
    #: Detect burned-in text with Tesseract when Clean Pixel Data is selected.
    ocr: bool = True
    #: Re-scan the output (and, with OCR, its pixels) and refuse release on residue.
    verify: bool = True
    region_rules: RegionRules = field(default_factory=RegionRules.default)
    safe_private: SafePrivateList = field(default_factory=SafePrivateList.default)

    def __post_init__(self) -> None:
        validate_options(self.options)
        if self.compound not in ("conformant", "minimal"):
            raise InvalidInputError("compound must be 'conformant' or 'minimal'")
        if not self.project.strip():
            raise InvalidInputError("a project name is required")

    def with_options(self, *options: Option) -> DeidConfig:
        """A copy with more options selected."""
        return replace(self, options=self.options | frozenset(options))


def build_config(
    profile: str = "basic",
    options: list[str] | tuple[str, ...] = (),
    project: str = "default",
    **extra: Any,
) -> DeidConfig:
    """Build a configuration from option names/codes (CLI and file front-ends)."""
    if profile not in PROFILES:
        raise InvalidInputError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    return DeidConfig(options=frozenset(parse_option(o) for o in options), project=project,
                      **extra)


def load_profile_file(path: Path, **overrides: Any) -> DeidConfig:
    """Read a TOML profile/options file; keyword ``overrides`` win over the file."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInputError(f"cannot read options file {path.name}: {exc}") from None
    known = {"profile", "project", "options", "keep_mapping", "compound", "ocr", "verify",
             "region_rules", "safe_private"}
    unknown = set(doc) - known
    if unknown:
        raise InvalidInputError(f"options file: unknown keys {sorted(unknown)}")
    extra: dict[str, Any] = {k: doc[k] for k in ("keep_mapping", "compound", "ocr", "verify")
                             if k in doc}
    if "region_rules" in doc:
        extra["region_rules"] = RegionRules.load(path.parent / doc["region_rules"])
    if "safe_private" in doc:
        extra["safe_private"] = SafePrivateList.load(path.parent / doc["safe_private"])
    options = list(doc.get("options", []))
    options += [o.value for o in overrides.pop("add_options", ())]
    extra.update({k: v for k, v in overrides.items() if k not in ("profile", "project")})
    return build_config(
        overrides.get("profile") or doc.get("profile", "basic"),
        options,
        overrides.get("project") or doc.get("project", "default"),
        **extra,
    )
