"""HKDF sub-keys of the keyring's root secret (RFC 5869).

Each purpose gets its own key so that a key for one job (blind indexes) can
never be used for another (the audit chain).
"""

from __future__ import annotations

from enum import StrEnum

from dicomvault.crypto import _aead


class KeyPurpose(StrEnum):
    INDEX = "dicomvault/v1/blind-index"
    AUDIT = "dicomvault/v1/audit-chain"
    PSEUDONYM = "dicomvault/v1/pseudonym"
    CHECKPOINT = "dicomvault/v1/audit-checkpoint-ed25519"
    SESSION = "dicomvault/v1/session"
    TOKEN = "dicomvault/v1/token"  # noqa: S105 - a derivation label, not a secret


def derive_subkey(root_secret: bytes, purpose: KeyPurpose) -> bytes:
    """Derive the 32-byte sub-key for ``purpose`` (HKDF-SHA-256, info = purpose)."""
    return _aead.hkdf_sha256(root_secret, purpose.value.encode())
