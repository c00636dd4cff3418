"""The HTTPS door in-process: ``create_app(services)`` under Starlette's TestClient (https://testserver).

Principals are real accounts: each role gets a user and a personal API token
(all of its role's permissions) issued by the system operator; session tests
log in through the JSON flow with a real TOTP.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import pydicom
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from dicomvault.access.passwords import Passwords
from dicomvault.access.principal import system_principal
from dicomvault.access.tokens import permissions_of
from dicomvault.web.app import create_app

FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
ROLES = ("admin", "radiologist", "technologist", "referring", "researcher", "auditor", "service", "patient")
BOUNDARY = "test-boundary-1234"


def make_instance(study_uid: str | None = None, series_uid: str | None = None, source: str = "CT_small.dcm",
                  **attrs: object) -> bytes:
    """A valid PS3.10 instance from the pydicom test corpus with fresh UIDs."""
    ds = pydicom.dcmread(get_testdata_file(source))
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    for key, value in attrs.items():
        setattr(ds, key, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def multipart_body(parts: list[bytes], boundary: str = BOUNDARY, part_type: str = "application/dicom") -> bytes:
    out = b""
    for part in parts:
        out += f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + part + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def stow_headers(boundary: str = BOUNDARY) -> dict[str, str]:
    return {"Content-Type": f'multipart/related; type="application/dicom"; boundary="{boundary}"'}


@dataclass
class Account:
    role: str
    user_id: str
    username: str
    token: str
    token_id: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def web_services(settings_factory, keyring) -> Iterator:
    from dicomvault.index.migrate import upgrade
    from dicomvault.services.context import build_services

    svc = build_services(settings_factory(DICOMVAULT_HTTP__MAX_BODY_MB="2",
                                          DICOMVAULT_HTTP__CORS_ORIGINS="https://viewer.example"),
                         keyring=keyring)
    upgrade(svc.engine)
    svc.identity.passwords = Passwords(svc.settings.security, FAST_HASHER)
    yield svc
    svc.close()


@pytest.fixture
def client(web_services) -> Iterator[TestClient]:
    with TestClient(create_app(web_services), base_url="https://testserver") as c:
        yield c


def make_account(services, role: str, name: str | None = None) -> Account:
    operator = system_principal("cli")
    username = name or f"{role}-user"
    created = services.identity.create_user(operator, username, {role})
    issued = services.identity.create_api_token(operator, created.user_id, "test", permissions_of({role}), 1)
    return Account(role, created.user_id, username, issued.token, issued.token_id)


class Accounts(dict[str, Account]):
    """One account per role, created on first use (keeps the role table fast)."""

    def __init__(self, services) -> None:
        super().__init__()
        self._services = services

    def __missing__(self, role: str) -> Account:
        self[role] = make_account(self._services, role)
        return self[role]


@pytest.fixture
def accounts(web_services) -> Accounts:
    return Accounts(web_services)


@pytest.fixture(scope="session")
def web_pki(tmp_path_factory: pytest.TempPathFactory):
    from tests.integration.dimse.support import make_pki

    return make_pki(tmp_path_factory.mktemp("web-pki"), ("client",))
