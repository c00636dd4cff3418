"""Password policy and hashing (NIST SP 800-63B 5.1.1.2, RFC 9106)."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from dicomvault.access.lockout import delay_seconds
from dicomvault.access.passwords import Passwords, common_passwords
from dicomvault.config import SecuritySettings
from dicomvault.errors import InvalidInputError

FAST = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)


@pytest.fixture
def pw() -> Passwords:
    return Passwords(SecuritySettings(), FAST)


def test_common_list_shipped_with_at_least_10000_entries():
    assert len(common_passwords()) >= 10_000
    assert {"password", "123456", "qwerty"} <= common_passwords()


def test_hash_is_argon2id_and_verifies(pw):
    digest = pw.hash("a perfectly fine passphrase")
    assert digest.startswith("$argon2id$")
    assert pw.verify(digest, "a perfectly fine passphrase")
    assert not pw.verify(digest, "a perfectly fine passphrasE")
    assert not pw.verify(None, "a perfectly fine passphrase")
    assert not pw.verify("not-a-hash", "x")


def test_default_hasher_is_argon2id():
    assert Passwords(SecuritySettings()).hash("whatever it is long").startswith("$argon2id$")


REFUSALS = [
    ("eleven-char", "abcdefghijk", "password-too-short"),
    ("common-12", "1qaz2wsx3edc", "password-common"),
    ("common-upper", "QWERTYUIOP123", "password-common"),
    ("too-long", "x" * 300, "password-too-long"),
    ("username", "alice.smithalice.smith", "password-is-username"),
]


@pytest.mark.parametrize(("case", "password", "code"), REFUSALS, ids=[c[0] for c in REFUSALS])
def test_policy_refuses(pw, case, password, code):
    with pytest.raises(InvalidInputError) as err:
        pw.check_policy(password, "alice.smith")
    assert err.value.code == code


def test_policy_accepts_long_uncommon_passphrase(pw):
    pw.check_policy("violet tractor sings at dawn", "alice.smith")


def test_policy_refuses_reuse_of_history(pw):
    old = [pw.hash(f"old passphrase number {i}") for i in range(6)]
    for i in range(5):
        with pytest.raises(InvalidInputError):
            pw.check_policy(f"old passphrase number {i}", "bob", old)
    pw.check_policy("old passphrase number 5", "bob", old)  # older than the last 5


def test_policy_min_length_from_settings():
    strict = Passwords(SecuritySettings(password_min_length=20), FAST)
    with pytest.raises(InvalidInputError):
        strict.check_policy("nineteen characters", "bob")


@pytest.mark.parametrize(("failures", "delay"), [(0, 0), (1, 0), (2, 1), (3, 2), (4, 4), (7, 30), (50, 30)])
def test_progressive_delay_schedule(failures, delay):
    assert delay_seconds(failures) == delay
