"""Filesystem blob store: durable writes, integrity digest, keys that cannot escape the root."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from dicomvault.errors import InvalidInputError, NotFoundError
from dicomvault.storage.filesystem import FilesystemBlobStore


def test_write_then_read_back_with_digest_and_no_temporary_left(tmp_path: Path):
    store = FilesystemBlobStore(tmp_path / "blobs")
    pieces = [b"head", os.urandom(700_000), b"", b"tail"]
    with store.write("ab/0123.dvb") as writer:
        for piece in pieces:
            writer.write(piece)
    data = b"".join(pieces)
    assert writer.info.size == len(data)
    assert writer.info.sha256 == hashlib.sha256(data).hexdigest() == store.sha256("ab/0123.dvb")
    with store.open("ab/0123.dvb") as fh:
        assert fh.read() == data
    assert list(store.keys()) == ["ab/0123.dvb"]
    assert not [p for p in (tmp_path / "blobs").rglob(".*")]
    assert (tmp_path / "blobs" / "ab" / "0123.dvb").stat().st_mode & 0o777 == 0o600


def test_a_failed_write_leaves_neither_the_blob_nor_its_temporary(tmp_path: Path):
    store = FilesystemBlobStore(tmp_path / "blobs")
    with pytest.raises(RuntimeError), store.write("cd/broken.dvb") as writer:
        writer.write(b"partial")
        raise RuntimeError("encryption failed")
    assert not store.exists("cd/broken.dvb")
    assert [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()] == []


def test_a_deleted_folder_is_created_again(tmp_path: Path):
    store = FilesystemBlobStore(tmp_path / "blobs")
    with store.write("ef/one.dvb") as writer:
        writer.write(b"1")
    store.delete("ef/one.dvb")
    (tmp_path / "blobs" / "ef").rmdir()
    with store.write("ef/two.dvb") as writer:
        writer.write(b"2")
    with store.open("ef/two.dvb") as fh:
        assert fh.read() == b"2"


@pytest.mark.parametrize("key", [
    "../outside", "ab/../../outside", "/etc/passwd", ".hidden", "ab/.hidden", "a b", "ab//cd",
    "ab\\..\\x", "", "a/b/c/d/e", "ab/%2e%2e",
])
def test_keys_that_could_escape_the_root_are_refused(tmp_path: Path, key: str):
    (tmp_path / "outside").write_bytes(b"secret")
    store = FilesystemBlobStore(tmp_path / "blobs")
    with pytest.raises((InvalidInputError, NotFoundError)):
        store.open(key)
    with pytest.raises((InvalidInputError, NotFoundError)), store.write(key) as writer:
        writer.write(b"overwrite")
    assert (tmp_path / "outside").read_bytes() == b"secret"
    assert not (tmp_path / "etc").exists()


def test_missing_blob_is_not_found(tmp_path: Path):
    store = FilesystemBlobStore(tmp_path / "blobs")
    with pytest.raises(NotFoundError):
        store.open("ab/missing.dvb")
    assert not store.exists("ab/missing.dvb")
