"""The shipped list of safe private attributes (PS3.15 E.3.10, Retain Safe Private Option).

An entry names a private creator, the group and the element's low byte
(``xxEE`` within the block that creator reserves).  The shipped list is a
conservative subset of PS3.15 Table E.3.10-1 (diffusion parameters); a site
can supply its own JSON file with the same shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from dicomvault.errors import InvalidInputError


@dataclass(frozen=True)
class SafePrivateList:
    """Safe private attributes keyed by (creator, group, element low byte)."""

    entries: frozenset[tuple[str, int, int]]

    @classmethod
    def from_json(cls, text: str) -> SafePrivateList:
        """Parse ``{"attributes": [{"creator", "group", "element"}, ...]}`` (hex strings)."""
        try:
            doc = json.loads(text)
            entries = frozenset(
                (a["creator"].strip().upper(), int(a["group"], 16), int(a["element"], 16) & 0xFF)
                for a in doc["attributes"]
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise InvalidInputError("safe-private list: malformed file") from None
        return cls(entries)

    @classmethod
    def load(cls, path: Path) -> SafePrivateList:
        try:
            return cls.from_json(path.read_text(encoding="utf-8"))
        except OSError:
            raise InvalidInputError(f"cannot read safe-private list {path.name}") from None

    @classmethod
    def default(cls) -> SafePrivateList:
        """The list shipped in ``deid/data/safe_private.json``."""
        return cls.from_json(
            resources.files("dicomvault.deid").joinpath("data/safe_private.json").read_text("utf-8")
        )

    def is_safe(self, creator: str, group: int, element: int) -> bool:
        """Whether the private element (group, element) reserved by ``creator`` is safe."""
        return (creator.strip().upper(), group, element & 0xFF) in self.entries
