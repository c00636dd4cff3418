"""Key hierarchy (DESIGN.md "Key hierarchy").

KEK (key file or environment, behind the small ``KeyEncryptionKey`` KMS
interface) wraps:

* one **data encryption key (DEK) per patient** (RFC 5649 key wrap), which
  encrypts that patient's blobs, PHI index fields and PHI in audit records;
* the **root secret**, from which HKDF derives the index (blind-index), audit
  (hash-chain), pseudonym and checkpoint-signing keys.  Deriving those from a
  wrapped root secret rather than from the KEK itself keeps them stable across
  KEK rotation: rotation only re-wraps, it never changes what was derived.

Callers get ``DataKey`` objects that seal/open; they never see a nonce.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dicomvault.crypto import _aead
from dicomvault.crypto.blind import BlindIndex
from dicomvault.crypto.kdf import KeyPurpose, derive_subkey
from dicomvault.errors import ConfigurationError, TamperedError, UnavailableError

_FIELD_VERSION = b"\x01"


class KeyEncryptionKey(Protocol):
    """The KMS interface: something that wraps and unwraps data keys."""

    key_id: str

    def wrap(self, plaintext_key: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes) -> bytes: ...


class LocalKek:
    """A 256-bit KEK held in process memory (from a key file or an env variable)."""

    def __init__(self, material: bytes) -> None:
        if len(material) != _aead.KEY_BYTES:
            raise ConfigurationError("the KEK must be 32 bytes (base64 of 32 random bytes)")
        self._material = bytes(material)
        self.key_id = "local-" + hashlib.sha256(b"kek-id" + self._material).hexdigest()[:16]

    @classmethod
    def generate(cls) -> LocalKek:
        return cls(secrets.token_bytes(_aead.KEY_BYTES))

    @classmethod
    def from_base64(cls, text: str) -> LocalKek:
        try:
            return cls(base64.b64decode(text.strip(), validate=True))
        except ValueError:
            raise ConfigurationError("the KEK is not valid base64") from None

    def to_base64(self) -> str:
        return base64.b64encode(self._material).decode()

    def wrap(self, plaintext_key: bytes) -> bytes:
        """RFC 5649 wrap under this KEK."""
        return _aead.key_wrap(self._material, plaintext_key)

    def unwrap(self, wrapped: bytes) -> bytes:
        return _aead.key_unwrap(self._material, wrapped)


@dataclass(frozen=True)
class WrappedKey:
    """A DEK wrapped under the KEK ``kek_id``; safe to store anywhere."""

    kek_id: str
    blob: bytes

    def to_str(self) -> str:
        return f"{self.kek_id}${base64.b64encode(self.blob).decode()}"

    @classmethod
    def from_str(cls, text: str) -> WrappedKey:
        kek_id, _, b64 = text.partition("$")
        if not kek_id or not b64:
            raise TamperedError("malformed wrapped key")
        return cls(kek_id, base64.b64decode(b64))


class DataKey:
    """An unwrapped AES-256 DEK.  ``seal``/``open`` handle nonces internally."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) != _aead.KEY_BYTES:
            raise ValueError("DEKs are 32 bytes")
        self._key = bytes(key)

    @classmethod
    def generate(cls) -> DataKey:
        return cls(secrets.token_bytes(_aead.KEY_BYTES))

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        """AES-256-GCM with a fresh random 96-bit nonce: version || nonce || ct || tag."""
        nonce = secrets.token_bytes(_aead.NONCE_BYTES)
        return _FIELD_VERSION + nonce + _aead.gcm_encrypt(self._key, nonce, plaintext, aad)

    def open(self, token: bytes, aad: bytes = b"") -> bytes:
        """Reverse of ``seal``; raises ``TamperedError`` on any mismatch."""
        if len(token) < 1 + _aead.NONCE_BYTES + _aead.TAG_BYTES or token[:1] != _FIELD_VERSION:
            raise TamperedError("integrity check failed")
        nonce = token[1 : 1 + _aead.NONCE_BYTES]
        return _aead.gcm_decrypt(self._key, nonce, token[1 + _aead.NONCE_BYTES :], aad)

    def seal_text(self, text: str | None, aad: str) -> bytes | None:
        return None if text is None else self.seal(text.encode("utf-8"), aad.encode())

    def open_text(self, token: bytes | None, aad: str) -> str | None:
        return None if token is None else self.open(token, aad.encode()).decode("utf-8")

    def _derive(self, salt: bytes, info: bytes) -> bytes:
        return _aead.hkdf_sha256(self._key, info, salt=salt)

    def __repr__(self) -> str:  # never print key material
        return "DataKey(<hidden>)"


class Keyring:
    """The active KEK, retired KEKs (to unwrap old wraps) and the derived sub-keys."""

    def __init__(
        self,
        kek: KeyEncryptionKey,
        root_secret: bytes,
        retired: Iterable[KeyEncryptionKey] = (),
    ) -> None:
        self._kek = kek
        self._keks: dict[str, KeyEncryptionKey] = {k.key_id: k for k in retired}
        self._keks[kek.key_id] = kek
        self._root = bytes(root_secret)
        self.index_key = derive_subkey(self._root, KeyPurpose.INDEX)
        self.audit_key = derive_subkey(self._root, KeyPurpose.AUDIT)
        self.pseudonym_key = derive_subkey(self._root, KeyPurpose.PSEUDONYM)
        self.session_key = derive_subkey(self._root, KeyPurpose.SESSION)
        self.token_key = derive_subkey(self._root, KeyPurpose.TOKEN)
        self._checkpoint_seed = derive_subkey(self._root, KeyPurpose.CHECKPOINT)
        self.blind = BlindIndex(self.index_key)

    @property
    def kek_id(self) -> str:
        return self._kek.key_id

    def new_data_key(self) -> tuple[DataKey, WrappedKey]:
        """A fresh DEK and its wrap under the active KEK."""
        dek = DataKey.generate()
        return dek, WrappedKey(self._kek.key_id, self._kek.wrap(dek._key))

    def unwrap(self, wrapped: WrappedKey) -> DataKey:
        """Unwrap a DEK; fails closed (``UnavailableError``) when its KEK is absent."""
        kek = self._keks.get(wrapped.kek_id)
        if kek is None:
            raise UnavailableError("the key-encryption key for this data is not available")
        return DataKey(kek.unwrap(wrapped.blob))

    def rewrap(self, wrapped: WrappedKey) -> WrappedKey:
        """Re-wrap a DEK under the active KEK (KEK rotation; data untouched)."""
        if wrapped.kek_id == self._kek.key_id:
            return wrapped
        dek = self.unwrap(wrapped)
        return WrappedKey(self._kek.key_id, self._kek.wrap(dek._key))

    def sign_checkpoint(self, message: bytes) -> bytes:
        """Ed25519 signature with the keyring's checkpoint key."""
        return _aead.ed25519_sign(self._checkpoint_seed, message)

    @property
    def checkpoint_public_key(self) -> bytes:
        return _aead.ed25519_public_key(self._checkpoint_seed)

    @staticmethod
    def verify_checkpoint(public_key: bytes, signature: bytes, message: bytes) -> bool:
        return _aead.ed25519_verify(public_key, signature, message)

    def hmac(self, key: bytes, data: bytes) -> bytes:
        """HMAC-SHA-256 under one of this keyring's sub-keys."""
        return _aead.hmac_sha256(key, data)


# ---------------------------------------------------------------------------
# Key files: keys/kek.key (base64, 0600), keys/root.json (root secret wrapped),
# keys/retired/<kek_id>.key (previous KEKs, kept so older backups restore).
# ---------------------------------------------------------------------------

def _write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    os.chmod(path, 0o600)


def _read_kek_file(path: Path) -> LocalKek:
    if not path.exists():
        raise UnavailableError(f"KEK file missing: {path}")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigurationError(f"KEK file {path} must not be readable by others (mode 0600)")
    return LocalKek.from_base64(path.read_text())


def load_kek(kek_file: Path, kek_env: str, environ: Mapping[str, str]) -> LocalKek:
    """The active KEK: from the named environment variable if set, else the key file."""
    if kek_env:
        value = environ.get(kek_env)
        if not value:
            raise UnavailableError(f"KEK environment variable {kek_env} is not set")
        return LocalKek.from_base64(value)
    return _read_kek_file(kek_file)


def create_key_files(keys_dir: Path, kek_file: Path, write_kek: bool = True) -> LocalKek:
    """First-run key material: a KEK (unless supplied by env) and the wrapped root secret."""
    if (keys_dir / "root.json").exists():
        raise ConfigurationError(f"key material already exists in {keys_dir}")
    kek = LocalKek.generate()
    if write_kek:
        _write_secret(kek_file, kek.to_base64() + "\n")
    _store_root(keys_dir, kek, secrets.token_bytes(_aead.KEY_BYTES))
    return kek


def _store_root(keys_dir: Path, kek: KeyEncryptionKey, root: bytes) -> None:
    doc = {"version": 1, "kek_id": kek.key_id, "wrapped": base64.b64encode(kek.wrap(root)).decode()}
    _write_secret(keys_dir / "root.json", json.dumps(doc) + "\n")


def _retired_keks(keys_dir: Path) -> list[LocalKek]:
    folder = keys_dir / "retired"
    return [_read_kek_file(p) for p in sorted(folder.glob("*.key"))] if folder.is_dir() else []


def open_keyring(
    keys_dir: Path, kek_file: Path, kek_env: str = "", environ: Mapping[str, str] | None = None
) -> Keyring:
    """Open the keyring; fails closed if the KEK or root secret is unavailable."""
    kek = load_kek(kek_file, kek_env, environ or {})
    retired = _retired_keks(keys_dir)
    root_path = keys_dir / "root.json"
    if not root_path.exists():
        raise UnavailableError(f"root key material missing: {root_path} (run 'dicomvault init')")
    doc = json.loads(root_path.read_text())
    wrapped = WrappedKey(doc["kek_id"], base64.b64decode(doc["wrapped"]))
    by_id = {k.key_id: k for k in [kek, *retired]}
    owner = by_id.get(wrapped.kek_id)
    if owner is None:
        raise UnavailableError("the KEK that wraps the root secret is not available")
    return Keyring(kek, owner.unwrap(wrapped.blob), retired)


def rotate_kek_file(keys_dir: Path, kek_file: Path) -> tuple[Keyring, str, str]:
    """Generate a new KEK, retire the old one and re-wrap the root secret.

    Returns the new keyring and the (old, new) KEK ids.  The caller re-wraps the
    DEKs stored in the index (``Keyring.rewrap``); data is never re-encrypted.
    """
    old = _read_kek_file(kek_file)
    keyring = open_keyring(keys_dir, kek_file)
    new = LocalKek.generate()
    _write_secret(keys_dir / "retired" / f"{old.key_id}.key", old.to_base64() + "\n")
    _store_root(keys_dir, new, keyring._root)
    _write_secret(kek_file, new.to_base64() + "\n")
    return Keyring(new, keyring._root, [old, *_retired_keks(keys_dir)]), old.key_id, new.key_id
