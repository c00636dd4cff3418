"""Filesystem blob store with durable writes.

Write path: temp file in the target folder → write → fsync → rename over the
final name → fsync the folder.  A crash leaves the old state or the new one;
stray ``*.tmp`` files are removed by ``sweep_temporary``.  ``stage`` splits
the path in two: the caller writes, then ``persist`` (fsync, rename, folder
fsync) can run on another thread while the caller does other work.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from dicomvault.errors import NotFoundError
from dicomvault.storage.base import BlobInfo, check_key

_TMP_SUFFIX = ".tmp"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StagedBlob:
    """A blob being written to its temp file: not visible, not durable.

    ``persist`` makes it both (fsync, rename to the final name, folder fsync);
    ``discard`` removes it.  Exactly one of them must be called.
    """

    def __init__(self, fd: int, tmp: Path, final: Path, key: str) -> None:
        self._fd: int | None = fd
        self._tmp = tmp
        self._final = final
        self._hash = hashlib.sha256()
        self._size = 0
        self._key = key

    def write(self, data: bytes) -> int:
        """Append ``data`` (callers write whole encrypted chunks; no buffering here)."""
        assert self._fd is not None, "blob already persisted or discarded"
        # A raw write may be partial: loop until every byte is written.
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        self._hash.update(data)
        self._size += len(data)
        return len(data)

    @property
    def info(self) -> BlobInfo:
        return BlobInfo(self._key, self._size, self._hash.hexdigest())

    def persist(self) -> BlobInfo:
        """Make the blob durable under its key; on failure it is discarded and the error raised."""
        fd, self._fd = self._fd, None
        assert fd is not None, "blob already persisted or discarded"
        try:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self._tmp, self._final)
            _fsync_dir(self._final.parent)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        return self.info

    def discard(self) -> None:
        """Remove the temp file (a no-op once persisted)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
            self._tmp.unlink(missing_ok=True)


class FilesystemBlobStore:
    """``BlobStore`` on a local folder (mode 0700)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._real_root = self.root.resolve()
        #: Folders known to exist (created by this process or seen): skip their mkdir.
        self._folders: set[Path] = set()

    def _path(self, key: str) -> Path:
        # check_key admits only relative names whose parts start with a letter or
        # digit (no "..", no absolute path), so the joined path stays under the
        # root without resolving it on every call (one lstat per component).
        path = self._real_root / check_key(key)
        if self._real_root not in path.parents:
            raise NotFoundError("blob not found")
        return path

    @contextmanager
    def write(self, key: str) -> Iterator[StagedBlob]:
        """A writer whose blob is durable when the block exits cleanly, else removed."""
        staged = self.stage(key)
        try:
            yield staged
        except BaseException:
            staged.discard()
            raise
        staged.persist()

    def stage(self, key: str) -> StagedBlob:
        """A new blob under ``key`` to write, then ``persist`` (or ``discard``)."""
        final = self._path(key)
        if final.parent not in self._folders:
            final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._folders.add(final.parent)
        tmp = final.with_name(f".{final.name}.{secrets.token_hex(6)}{_TMP_SUFFIX}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileNotFoundError:  # the folder was removed behind our back
            final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        return StagedBlob(fd, tmp, final, key)

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")  # noqa: SIM115 - caller closes
        except FileNotFoundError:
            raise NotFoundError("blob not found") from None

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        _fsync_dir(path.parent)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def keys(self) -> Iterator[str]:
        for path in self.root.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                yield path.relative_to(self.root).as_posix()

    def sha256(self, key: str) -> str:
        digest = hashlib.sha256()
        with self.open(key) as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def sweep_temporary(self) -> int:
        """Remove temp files left by a crash mid-write; returns how many."""
        count = 0
        for path in self.root.rglob(f".*{_TMP_SUFFIX}"):
            path.unlink(missing_ok=True)
            count += 1
        return count
