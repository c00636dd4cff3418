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


def test_a_staged_blob_is_invisible_until_persisted_from_another_thread(tmp_path: Path):
    """``stage`` + ``persist``: the ingest path writes, then makes durable on its blob thread."""
    from concurrent.futures import ThreadPoolExecutor

    store = FilesystemBlobStore(tmp_path / "blobs")
    staged = store.stage("ab/staged.dvb")
    data = os.urandom(300_000)
    staged.write(data)
    assert not store.exists("ab/staged.dvb")
    assert list(store.keys()) == []  # only the hidden temporary exists
    with ThreadPoolExecutor(1) as pool:
        info = pool.submit(staged.persist).result()
    assert info.key == "ab/staged.dvb" and info.size == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest() == store.sha256("ab/staged.dvb")
    assert not [p for p in (tmp_path / "blobs").rglob(".*")]
    staged.discard()  # after persist: nothing to drop, the blob stays
    assert store.exists("ab/staged.dvb")
    with pytest.raises(AssertionError):
        staged.write(b"more")  # a persisted blob takes no more bytes


def test_a_discarded_staged_blob_leaves_nothing(tmp_path: Path):
    store = FilesystemBlobStore(tmp_path / "blobs")
    staged = store.stage("ab/dropped.dvb")
    staged.write(b"partial")
    staged.discard()
    staged.discard()  # idempotent
    assert not store.exists("ab/dropped.dvb")
    assert [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()] == []
    with pytest.raises(AssertionError):
        staged.persist()


def test_a_failed_persist_removes_the_temporary(tmp_path: Path):
    store = FilesystemBlobStore(tmp_path / "blobs")
    staged = store.stage("ab/lost.dvb")
    staged.write(b"bytes")
    (tmp_path / "blobs" / "ab").chmod(0o500)  # the rename cannot happen
    try:
        if os.geteuid() == 0:  # root ignores folder permissions: remove the folder instead
            (tmp_path / "blobs" / "ab").chmod(0o700)
            for p in (tmp_path / "blobs" / "ab").iterdir():
                p.unlink()
            (tmp_path / "blobs" / "ab").rmdir()
        with pytest.raises(OSError):
            staged.persist()
    finally:
        if (tmp_path / "blobs" / "ab").exists():
            (tmp_path / "blobs" / "ab").chmod(0o700)
    assert not store.exists("ab/lost.dvb")
    assert [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()] == []
