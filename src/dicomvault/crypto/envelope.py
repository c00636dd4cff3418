"""Versioned, chunked AES-256-GCM envelope for instance blobs.

Format (version 1)::

    header  = b"DVB" | version (1) | key_id_len (1) | key_id | nonce (12) | chunk_size (4, BE)
    chunk_i = AES-256-GCM(blob_key, nonce_i, plaintext_i, aad_i) = ciphertext_i || tag_i (16)

* ``blob_key = HKDF(DEK, salt=nonce, info="dicomvault/v1/blob")``: one key per
  blob, derived from the patient DEK and the blob's 96-bit random nonce, so
  counter nonces inside a blob can never collide with another blob's.
* ``nonce_i`` = 4 zero bytes || chunk index (8, BE); ``aad_i`` = header ||
  the caller's AAD (the SOP Instance UID) || index (8) || final flag (1).  A
  chunk therefore cannot be moved, dropped, truncated or swapped into another
  blob or instance (the STREAM construction of Hoang, Reyhanitabar, Rogaway
  and Vizár).
* Plaintext is processed ``chunk_size`` bytes at a time, so objects larger
  than memory stream through in both directions.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

from dicomvault.crypto import _aead
from dicomvault.crypto.keyring import DataKey
from dicomvault.errors import TamperedError

MAGIC = b"DVB"
VERSION = 1
DEFAULT_CHUNK_SIZE = 1 << 20
_INFO = b"dicomvault/v1/blob"


def _header(key_id: str, nonce: bytes, chunk_size: int) -> bytes:
    kid = key_id.encode("ascii")
    if len(kid) > 255:
        raise ValueError("key id too long")
    return MAGIC + bytes([VERSION, len(kid)]) + kid + nonce + struct.pack(">I", chunk_size)


def _chunk_nonce(index: int) -> bytes:
    return b"\x00\x00\x00\x00" + struct.pack(">Q", index)


def _chunk_aad(header: bytes, aad: bytes, index: int, final: bool) -> bytes:
    return header + struct.pack(">I", len(aad)) + aad + struct.pack(">Q?", index, final)


def _rechunk(chunks: Iterable[bytes], size: int) -> Iterator[bytes | memoryview]:
    """Pieces of exactly ``size`` bytes (the last one shorter, possibly empty).

    Whole chunks inside a large piece, and a tail that needs no joining, are
    yielded as zero-copy views: an instance is usually one piece shorter than
    a chunk, and copying half a megabyte into fresh memory costs more than
    encrypting it.
    """
    buf = bytearray()
    tail: memoryview | None = None
    for piece in chunks:
        view = memoryview(piece)
        if tail is not None:
            buf += tail
            tail = None
        if buf:
            take = min(size - len(buf), len(view))
            buf += view[:take]
            view = view[take:]
            if len(buf) == size:
                yield bytes(buf)
                buf.clear()
        while len(view) >= size:
            yield view[:size]
            view = view[size:]
        if buf:
            buf += view
        else:
            tail = view
    yield tail if tail is not None else bytes(buf)


def encrypt_stream(
    dek: DataKey,
    aad: bytes,
    chunks: Iterable[bytes],
    write: Callable[[bytes], object],
    *,
    key_id: str = "",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> int:
    """Encrypt an iterable of plaintext pieces, writing the envelope; returns bytes written."""
    nonce = secrets.token_bytes(_aead.NONCE_BYTES)
    header = _header(key_id, nonce, chunk_size)
    blob_key = dek._derive(nonce, _INFO)
    written = len(header)
    write(header)
    pending: bytes | memoryview | None = None
    index = 0
    for piece in _rechunk(chunks, chunk_size):
        if pending is not None:
            out = _aead.gcm_encrypt(
                blob_key, _chunk_nonce(index), pending, _chunk_aad(header, aad, index, False)
            )
            write(out)
            written += len(out)
            index += 1
        pending = piece
    # _rechunk always yields at least one (possibly empty, possibly full) piece.
    assert pending is not None
    if len(pending) == chunk_size:
        # A full final chunk is followed by an empty final one so that the
        # reader can tell "last chunk" from "stream cut at a chunk boundary".
        out = _aead.gcm_encrypt(
            blob_key, _chunk_nonce(index), pending, _chunk_aad(header, aad, index, False)
        )
        write(out)
        written += len(out)
        index += 1
        pending = b""
    out = _aead.gcm_encrypt(blob_key, _chunk_nonce(index), pending, _chunk_aad(header, aad, index, True))
    write(out)
    return written + len(out)


def encrypt_bytes(dek: DataKey, aad: bytes, data: bytes, *, key_id: str = "",
                  chunk_size: int = DEFAULT_CHUNK_SIZE) -> bytes:
    out: list[bytes] = []
    encrypt_stream(dek, aad, [data], out.append, key_id=key_id, chunk_size=chunk_size)
    return b"".join(out)


def read_key_id(src: BinaryIO) -> str:
    """Return the key id recorded in an envelope header (the stream is rewound)."""
    start = src.tell()
    head = src.read(5)
    if len(head) < 5 or head[:3] != MAGIC:
        raise TamperedError("integrity check failed")
    kid = src.read(head[4])
    src.seek(start)
    return kid.decode("ascii", "replace")


def decrypt_stream(dek: DataKey, aad: bytes, src: BinaryIO) -> Iterator[bytes]:
    """Yield plaintext chunks, verifying each; ``TamperedError`` on any mismatch.

    A chunk is only yielded after its tag verified, and the last chunk must
    carry the final flag, so a truncated or extended blob is detected.
    """
    head = src.read(5)
    if len(head) < 5 or head[:3] != MAGIC or head[3] != VERSION:
        raise TamperedError("integrity check failed")
    kid = src.read(head[4])
    rest = src.read(_aead.NONCE_BYTES + 4)
    if len(kid) != head[4] or len(rest) != _aead.NONCE_BYTES + 4:
        raise TamperedError("integrity check failed")
    header = head + kid + rest
    nonce = rest[: _aead.NONCE_BYTES]
    (chunk_size,) = struct.unpack(">I", rest[_aead.NONCE_BYTES :])
    if not 0 < chunk_size <= 1 << 26:
        raise TamperedError("integrity check failed")
    blob_key = dek._derive(nonce, _INFO)
    step = chunk_size + _aead.TAG_BYTES
    index = 0
    current = src.read(step)
    while True:
        nxt = src.read(step) if len(current) == step else b""
        final = not nxt
        if len(current) < _aead.TAG_BYTES:
            raise TamperedError("integrity check failed")
        yield _aead.gcm_decrypt(
            blob_key, _chunk_nonce(index), current, _chunk_aad(header, aad, index, final)
        )
        if final:
            return
        current = nxt
        index += 1


def decrypt_bytes(dek: DataKey, aad: bytes, data: bytes) -> bytes:
    import io

    return b"".join(decrypt_stream(dek, aad, io.BytesIO(data)))
