"""The ``BlobStore`` interface.

Stores only ever see ciphertext envelopes (``crypto.envelope``).  ``write``
is durable when its context exits without error: the object is complete and
on stable storage, or absent.  A SHA-256 of the stored bytes is returned so
the index can keep it for fixity checks (HIPAA §164.312(c)(2)).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from dicomvault.errors import InvalidInputError

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._\-]{0,127}){0,3}$")


def check_key(key: str) -> str:
    """Blob keys are short relative paths of safe characters; no traversal."""
    if not _KEY.match(key) or ".." in key:
        raise InvalidInputError("invalid blob key")
    return key


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    sha256: str


class BlobWriter(Protocol):
    def write(self, data: bytes) -> int: ...

    @property
    def info(self) -> BlobInfo: ...


class StagedWrite(BlobWriter, Protocol):
    def persist(self) -> BlobInfo:
        """Make the written blob durable and visible under its key (raises on failure)."""
        ...

    def discard(self) -> None:
        """Drop the written bytes (a no-op once persisted)."""
        ...


class BlobStore(Protocol):
    def write(self, key: str) -> AbstractContextManager[BlobWriter]:
        """Open a durable writer; the blob appears atomically when the block exits cleanly."""
        ...

    def stage(self, key: str) -> StagedWrite:
        """Write now, make durable later (``persist``, possibly on another thread)."""
        ...

    def open(self, key: str) -> BinaryIO:
        """Open a blob for reading (raises NotFoundError)."""
        ...

    def delete(self, key: str) -> None: ...

    def exists(self, key: str) -> bool: ...

    def keys(self) -> Iterator[str]:
        """Every stored key (for orphan sweeps and fixity checks)."""
        ...

    def sha256(self, key: str) -> str:
        """Recompute the SHA-256 of the stored bytes (fixity check)."""
        ...
