"""The only module that touches ``cryptography.hazmat`` primitives for data keys.

Everything here is hazardous (raw keys, nonces); public callers use
``keyring``, ``envelope`` and ``blind`` instead.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

from dicomvault.errors import TamperedError

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
        raise ValueError("AES-256 keys are exactly 32 bytes")


def gcm_encrypt(key: bytes, nonce: bytes, plaintext: bytes | memoryview, aad: bytes) -> bytes:
    """AES-256-GCM seal; returns ciphertext || tag (NIST SP 800-38D)."""
    _check_key(key)
    if len(nonce) != NONCE_BYTES:
        raise ValueError("GCM nonces are 96 bits")
    return AESGCM(bytes(key)).encrypt(nonce, plaintext, aad)


def gcm_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM open; any failure is the same ``TamperedError`` (no reason given)."""
    _check_key(key)
    try:
        return AESGCM(bytes(key)).decrypt(nonce, ciphertext, aad)
    except (InvalidTag, ValueError):
        raise TamperedError("integrity check failed") from None


def _check_kek(kek: bytes) -> None:
    if len(kek) not in (16, 24, 32):
        raise ValueError("AES key-wrap keys are 128, 192 or 256 bits")


def key_wrap(kek: bytes, key: bytes) -> bytes:
    """RFC 5649 AES key wrap with padding."""
    _check_kek(kek)
    return aes_key_wrap_with_padding(bytes(kek), bytes(key))


def key_unwrap(kek: bytes, wrapped: bytes) -> bytes:
    """RFC 5649 unwrap; a wrong KEK or altered blob raises ``TamperedError``."""
    _check_kek(kek)
    try:
        return aes_key_unwrap_with_padding(bytes(kek), bytes(wrapped))
    except (InvalidUnwrap, ValueError):
        raise TamperedError("key unwrap failed") from None


def hkdf_sha256(ikm: bytes, info: bytes, length: int = KEY_BYTES, salt: bytes | None = None) -> bytes:
    """RFC 5869 HKDF with SHA-256."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(bytes(ikm))


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    return _hmac.new(bytes(key), data, hashlib.sha256).digest()


def ed25519_sign(seed: bytes, message: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(bytes(seed)).sign(message)


def ed25519_public_key(seed: bytes) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return (
        Ed25519PrivateKey.from_private_bytes(bytes(seed))
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )


def ed25519_verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
