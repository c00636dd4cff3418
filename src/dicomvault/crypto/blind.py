"""Blind indexes: keyed HMAC-SHA-256 tokens for exact and prefix search.

The index stores tokens, never plaintext.  A token is
``HMAC(index_key, kind || field || normalised value)`` truncated to 128 bits
(hex).  ``kind`` separates exact tokens from prefix tokens so that a prefix
token never equals an exact token of a shorter value.

Person names follow PS3.4 C.2.2.2.1 (case-insensitive matching chosen here,
as most archives do): values are case-folded, trailing component separators
and padding removed.  Each name *word* (family, given, middle...) also gets
prefix tokens so that ``*john*``-style queries can match a component start.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata

#: Longest prefix that gets its own token; longer prefixes are matched on the
#: capped token and then filtered on decrypted values by the caller.
PREFIX_MAX = 16
_TOKEN_BYTES = 16
_WORD_SPLIT = re.compile(r"[\^\s=,.\-]+")


def normalise(value: str, *, case_insensitive: bool = False) -> str:
    """Canonical form for matching: NFC, trimmed padding, optional case-fold."""
    text = unicodedata.normalize("NFC", value).strip(" \x00")
    return text.casefold() if case_insensitive else text


def normalise_person_name(value: str) -> str:
    """PN canonical form: alphabetic group only, case-folded, trailing '^' dropped."""
    alphabetic = value.split("=", 1)[0]
    components = [c.strip() for c in alphabetic.split("^")]
    while components and not components[-1]:
        components.pop()
    return normalise("^".join(components), case_insensitive=True)


def person_name_words(value: str) -> list[str]:
    """Words of a person name (each component split on spaces), case-folded."""
    return [w for w in _WORD_SPLIT.split(normalise_person_name(value)) if w]


class BlindIndex:
    """Computes search tokens under one index key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("blind-index keys are 32 bytes")
        self._key = bytes(key)

    def _token(self, kind: str, field: str, value: str) -> str:
        msg = b"\x00".join((kind.encode(), field.encode(), value.encode("utf-8")))
        return hmac.new(self._key, msg, hashlib.sha256).digest()[:_TOKEN_BYTES].hex()

    def exact(self, field: str, value: str) -> str:
        """Token for exact match of an already normalised value."""
        return self._token("e", field, value)

    def prefix(self, field: str, prefix: str) -> str:
        """Token to look up values starting with ``prefix`` (capped at PREFIX_MAX)."""
        return self._token("p", field, prefix[:PREFIX_MAX])

    def prefix_tokens(self, field: str, value: str) -> list[str]:
        """All prefix tokens to store for ``value`` (lengths 1..PREFIX_MAX)."""
        return [self.prefix(field, value[:n]) for n in range(1, min(len(value), PREFIX_MAX) + 1)]

    def word_prefix(self, field: str, prefix: str) -> str:
        """Token to look up values with a word starting with ``prefix``."""
        return self._token("w", field, prefix[:PREFIX_MAX])

    def word_prefix_tokens(self, field: str, words: list[str]) -> list[str]:
        tokens: set[str] = set()
        for word in words:
            tokens.update(
                self.word_prefix(field, word[:n]) for n in range(1, min(len(word), PREFIX_MAX) + 1)
            )
        return sorted(tokens)
