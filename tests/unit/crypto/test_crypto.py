"""crypto/: known-answer vectors, envelope tamper resistance, keyring, blind indexes."""

from __future__ import annotations

import io
import json
import os
import secrets
from pathlib import Path

import pytest

from dicomvault.crypto import _aead, envelope
from dicomvault.crypto.blind import BlindIndex, normalise_person_name, person_name_words
from dicomvault.crypto.keyring import (
    DataKey,
    Keyring,
    LocalKek,
    WrappedKey,
    create_key_files,
    open_keyring,
    rotate_kek_file,
)
from dicomvault.errors import ConfigurationError, TamperedError, UnavailableError

VECTORS = json.loads((Path(__file__).parents[2] / "vectors" / "crypto_vectors.json").read_text())
h = bytes.fromhex


@pytest.mark.parametrize("v", VECTORS["rfc5869_hkdf_sha256"], ids=lambda v: v["name"])
def test_hkdf_matches_rfc5869(v):
    assert _aead.hkdf_sha256(h(v["ikm"]), h(v["info"]), v["length"], h(v["salt"])).hex() == v["okm"]


@pytest.mark.parametrize("v", VECTORS["rfc5649_kwp"], ids=lambda v: v["name"])
def test_key_wrap_matches_rfc5649_and_unwraps(v):
    assert _aead.key_wrap(h(v["kek"]), h(v["key"])).hex() == v["wrapped"]
    assert _aead.key_unwrap(h(v["kek"]), h(v["wrapped"])) == h(v["key"])


@pytest.mark.parametrize("v", VECTORS["gcm_aes256"], ids=lambda v: v["name"])
def test_gcm_matches_published_vector(v):
    out = _aead.gcm_encrypt(h(v["key"]), h(v["iv"]), h(v["pt"]), h(v["aad"]))
    assert out.hex() == v["ct"] + v["tag"]
    assert _aead.gcm_decrypt(h(v["key"]), h(v["iv"]), out, h(v["aad"])) == h(v["pt"])


def test_unwrap_with_wrong_kek_is_tampered():
    wrapped = _aead.key_wrap(secrets.token_bytes(32), secrets.token_bytes(32))
    with pytest.raises(TamperedError):
        _aead.key_unwrap(secrets.token_bytes(32), wrapped)


# --- envelope ----------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 100, 4096, 4097, 3 * 4096, 50_000])
def test_envelope_round_trip_any_size(size):
    dek = DataKey.generate()
    data = os.urandom(size)
    blob = envelope.encrypt_bytes(dek, b"1.2.3", data, key_id="k", chunk_size=4096)
    assert envelope.decrypt_bytes(dek, b"1.2.3", blob) == data
    assert envelope.read_key_id(io.BytesIO(blob)) == "k"


def _blob(size=3 * 4096 + 10):
    dek = DataKey.generate()
    return dek, envelope.encrypt_bytes(dek, b"1.2.3", os.urandom(size), chunk_size=4096)


TAMPERS = {
    "flip-body": lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:],
    "flip-header": lambda b: b[:5] + bytes([b[5] ^ 1]) + b[6:],
    "flip-tag": lambda b: b[:-1] + bytes([b[-1] ^ 1]),
    "truncate-last-chunk": lambda b: b[:-20],
    "drop-last-chunk": lambda b: b[: len(b) - (10 + 16)],
    "append-garbage": lambda b: b + os.urandom(32),
    "swap-chunks": lambda b: (lambda hlen: b[:hlen] + b[hlen + 4112: hlen + 2 * 4112] + b[hlen: hlen + 4112]
                              + b[hlen + 2 * 4112:])(3 + 2 + 0 + 12 + 4),
    "empty": lambda b: b"",
}


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_envelope_detects_tampering(name):
    dek, blob = _blob()
    with pytest.raises(TamperedError):
        envelope.decrypt_bytes(dek, b"1.2.3", TAMPERS[name](blob))


def test_envelope_bound_to_sop_instance_uid_and_key():
    dek, blob = _blob()
    with pytest.raises(TamperedError):
        envelope.decrypt_bytes(dek, b"1.2.4", blob)
    with pytest.raises(TamperedError):
        envelope.decrypt_bytes(DataKey.generate(), b"1.2.3", blob)


def test_envelope_streams_large_object_in_bounded_memory():
    """A 64 MiB object passes through in 1 MiB pieces without being joined."""
    import tracemalloc

    dek = DataKey.generate()
    piece = os.urandom(1 << 20)
    out = io.BytesIO()
    tracemalloc.start()
    envelope.encrypt_stream(dek, b"1.2.3", (piece for _ in range(64)), out.write)
    out.seek(0)
    total = sum(len(c) for c in envelope.decrypt_stream(dek, b"1.2.3", out))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert total == 64 << 20
    # the BytesIO holding the ciphertext accounts for ~64 MiB; streaming adds only a few chunks
    assert peak < (64 << 20) + (16 << 20)


@pytest.mark.parametrize("sizes", [
    [0], [5], [64], [10, 54], [63, 1], [64, 64], [30, 0, 50, 100, 7], [200], [1] * 130, [64, 3, 61],
])
def test_envelope_chunks_do_not_depend_on_how_the_plaintext_is_split(sizes: list[int]):
    """Pieces of any size (shorter than a chunk, spanning chunks, empty) give the same
    chunk layout as the joined plaintext, and decrypt to it."""
    dek = DataKey.generate()
    data = os.urandom(sum(sizes))
    pieces, at = [], 0
    for size in sizes:
        pieces.append(data[at:at + size])
        at += size
    split, joined = io.BytesIO(), io.BytesIO()
    n_split = envelope.encrypt_stream(dek, b"1.2.3", pieces, split.write, chunk_size=64)
    n_joined = envelope.encrypt_stream(dek, b"1.2.3", [data], joined.write, chunk_size=64)
    assert n_split == n_joined == len(split.getvalue()) == len(joined.getvalue())
    split.seek(0)
    assert b"".join(envelope.decrypt_stream(dek, b"1.2.3", split)) == data


def test_same_plaintext_encrypts_differently():
    dek = DataKey.generate()
    assert envelope.encrypt_bytes(dek, b"u", b"x" * 100) != envelope.encrypt_bytes(dek, b"u", b"x" * 100)
    assert dek.seal(b"x") != dek.seal(b"x")


def test_field_seal_open_and_aad_binding():
    dek = DataKey.generate()
    token = dek.seal_text("Smith^John", "patient.PatientName:k1")
    assert dek.open_text(token, "patient.PatientName:k1") == "Smith^John"
    with pytest.raises(TamperedError):
        dek.open_text(token, "patient.PatientName:k2")
    assert "Smith" not in repr(dek) and repr(dek) == "DataKey(<hidden>)"


# --- keyring -----------------------------------------------------------------

def test_keyring_files_rotation_keeps_old_wraps_readable(tmp_path):
    keys = tmp_path / "keys"
    create_key_files(keys, keys / "kek.key")
    assert oct((keys / "kek.key").stat().st_mode & 0o777) == "0o600"
    ring = open_keyring(keys, keys / "kek.key")
    dek, wrapped = ring.new_data_key()
    sealed = dek.seal(b"phi")
    index_key = ring.index_key
    new_ring, old_id, new_id = rotate_kek_file(keys, keys / "kek.key")
    assert old_id != new_id and new_ring.kek_id == new_id
    reopened = open_keyring(keys, keys / "kek.key")
    assert reopened.unwrap(wrapped).open(sealed) == b"phi"  # old wrap via the retired KEK
    rewrapped = reopened.rewrap(wrapped)
    assert rewrapped.kek_id == new_id
    assert reopened.unwrap(rewrapped).open(sealed) == b"phi"
    assert reopened.index_key == index_key  # derived keys survive rotation


def test_keyring_fails_closed_without_kek(tmp_path):
    keys = tmp_path / "keys"
    create_key_files(keys, keys / "kek.key")
    (keys / "kek.key").unlink()
    with pytest.raises(UnavailableError):
        open_keyring(keys, keys / "kek.key")
    with pytest.raises(UnavailableError):
        open_keyring(keys, keys / "kek.key", kek_env="DV_TEST_KEK", environ={})


def test_keyring_refuses_world_readable_kek(tmp_path):
    keys = tmp_path / "keys"
    create_key_files(keys, keys / "kek.key")
    os.chmod(keys / "kek.key", 0o644)
    with pytest.raises(ConfigurationError):
        open_keyring(keys, keys / "kek.key")


def test_keyring_from_environment(tmp_path):
    keys = tmp_path / "keys"
    kek = create_key_files(keys, keys / "kek.key", write_kek=False)
    ring = open_keyring(keys, keys / "kek.key", kek_env="DV_KEK", environ={"DV_KEK": kek.to_base64()})
    assert ring.kek_id == kek.key_id
    with pytest.raises(UnavailableError):
        open_keyring(keys, keys / "kek.key", kek_env="DV_KEK",
                     environ={"DV_KEK": LocalKek.generate().to_base64()})


def test_unknown_kek_id_fails_closed():
    ring = Keyring(LocalKek.generate(), secrets.token_bytes(32))
    with pytest.raises(UnavailableError):
        ring.unwrap(WrappedKey("local-unknown", b"x" * 40))


def test_checkpoint_signature_verifies_and_detects_change():
    ring = Keyring(LocalKek.generate(), secrets.token_bytes(32))
    sig = ring.sign_checkpoint(b"head")
    assert Keyring.verify_checkpoint(ring.checkpoint_public_key, sig, b"head")
    assert not Keyring.verify_checkpoint(ring.checkpoint_public_key, sig, b"head2")


# --- blind indexes -------------------------------------------------------------

def test_blind_tokens_are_keyed_and_domain_separated():
    a, b = BlindIndex(secrets.token_bytes(32)), BlindIndex(secrets.token_bytes(32))
    assert a.exact("f", "x") != b.exact("f", "x")
    assert a.exact("f", "abc") != a.prefix("f", "abc")
    assert a.exact("f", "abc") != a.exact("g", "abc")
    assert a.prefix("f", "abc") in a.prefix_tokens("f", "abcdef")
    assert len(a.prefix_tokens("f", "x" * 40)) == 16


@pytest.mark.parametrize("raw,norm", [
    ("SMITH^JOHN", "smith^john"), ("Smith^John^^^", "smith^john"), ("smith^john=山田^太郎", "smith^john"),
    (" Smith ^ John ", "smith^john"),
])
def test_person_name_normalisation(raw, norm):
    assert normalise_person_name(raw) == norm


def test_person_name_words():
    assert person_name_words("van der Berg^Anna Maria") == ["van", "der", "berg", "anna", "maria"]
