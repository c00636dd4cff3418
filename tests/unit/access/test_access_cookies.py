"""Session cookie MAC and OIDC helpers that need no database."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

import pytest

from dicomvault.access.oidc import PendingLogin, parse_group_roles, pkce_challenge
from dicomvault.access.sessions import SessionManager
from dicomvault.config import SecuritySettings
from dicomvault.errors import ConfigurationError, NotAuthenticatedError


def test_pkce_s256_rfc7636_appendix_b():
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_group_roles_parse_and_refuse_unknown_role():
    assert parse_group_roles(("rad=radiologist", "rad=technologist")) == {
        "rad": frozenset({"radiologist", "technologist"})}
    with pytest.raises(ConfigurationError):
        parse_group_roles(("rad=superuser",))
    with pytest.raises(ConfigurationError):
        parse_group_roles(("radiologist",))


def test_forged_cookie_refused_without_database(keyring):
    manager = SessionManager(keyring, SecuritySettings(), lambda: datetime.now(UTC))
    sid = b"\x01" * 32
    body = base64.urlsafe_b64encode(sid).rstrip(b"=").decode()
    fake_mac = base64.urlsafe_b64encode(hashlib.sha256(sid).digest()).rstrip(b"=").decode()
    with pytest.raises(NotAuthenticatedError):
        manager.parse_cookie(f"{body}.{fake_mac}")


def test_pending_login_cookie_tamper_and_expiry(keyring):
    pending = PendingLogin("s" * 43, "n" * 43, "v" * 64, 1000.0)
    value = pending.to_cookie(keyring)
    assert PendingLogin.from_cookie(keyring, value, 1100.0) == pending
    body, mac = value.split(".")
    with pytest.raises(NotAuthenticatedError):
        PendingLogin.from_cookie(keyring, body[:-2] + "AA." + mac, 1100.0)
    with pytest.raises(NotAuthenticatedError):
        PendingLogin.from_cookie(keyring, value, 1000.0 + 601)
