"""A real ``WebServer`` over HTTPS (test CA) for real clients; principals hold personal API tokens."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from argon2 import PasswordHasher

from dicomvault.access.passwords import Passwords
from dicomvault.access.principal import system_principal
from dicomvault.access.tokens import permissions_of
from tests.integration.dimse.support import TestPki, make_pki

FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)


@pytest.fixture(scope="session")
def web_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_pki(tmp_path_factory.mktemp("web-pki"), ("client",))


@dataclass
class RunningServer:
    services: object
    port: int
    ca: Path

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def token(self, role: str, username: str | None = None) -> str:
        operator = system_principal("cli")
        created = self.services.identity.create_user(operator, username or f"{role}-client", {role})
        return self.services.identity.create_api_token(operator, created.user_id, "interop",
                                                       permissions_of({role}), 1).token

    def session(self, token: str) -> requests.Session:
        s = requests.Session()
        s.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise override verify
        s.verify = str(self.ca)
        s.headers["Authorization"] = f"Bearer {token}"
        return s


def start_server(tmp_path: Path, db_url: str, keyring, pki: TestPki, **env: str) -> Iterator[RunningServer]:
    from dicomvault.config import load_settings
    from dicomvault.index.migrate import upgrade
    from dicomvault.services.context import build_services
    from dicomvault.web.server import WebServer

    environ = {"DICOMVAULT_DATA_DIR": str(tmp_path / "data"), "DICOMVAULT_DATABASE__URL": db_url,
               "DICOMVAULT_TLS__CERT_FILE": str(pki.server.cert), "DICOMVAULT_TLS__KEY_FILE": str(pki.server.key),
               "DICOMVAULT_TLS__CA_FILE": str(pki.ca.cert), "DICOMVAULT_HTTP__PORT": "0", **env}
    services = build_services(load_settings(None, environ), keyring=keyring)
    upgrade(services.engine)
    services.identity.passwords = Passwords(services.settings.security, FAST_HASHER)
    server = WebServer(services)
    server.start()
    try:
        yield RunningServer(services, server.port, pki.ca.cert)
    finally:
        # The client keeps its HTTPS connection alive; don't wait out a graceful drain.
        server.stop(timeout=0.5)
        services.close()


@pytest.fixture
def https_server(tmp_path: Path, db_url: str, keyring, web_pki: TestPki) -> Iterator[RunningServer]:
    yield from start_server(tmp_path, db_url, keyring, web_pki)
