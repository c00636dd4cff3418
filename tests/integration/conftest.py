"""Full service graph over a real database (SQLite and PostgreSQL) and a real blob folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomvault.access.principal import Principal
from dicomvault.config import load_settings


@pytest.fixture
def settings_factory(tmp_path: Path, db_url: str):
    def make(**env: str):
        environ = {"DICOMVAULT_DATA_DIR": str(tmp_path / "data"), "DICOMVAULT_DATABASE__URL": db_url}
        environ.update(env)
        return load_settings(None, environ)

    return make


@pytest.fixture
def services(settings_factory, keyring) -> Iterator:
    from dicomvault.index.migrate import upgrade
    from dicomvault.services.context import build_services

    svc = build_services(settings_factory(), keyring=keyring)
    upgrade(svc.engine)
    yield svc
    svc.close()


def make_principal(role: str, name: str | None = None, **kw) -> Principal:
    name = name or f"{role}-user"
    return Principal(id=f"user:{name}", kind="user", name=name, roles=frozenset({role}),
                     address="127.0.0.1", door="test", mfa_verified=True, **kw)


@pytest.fixture
def technologist() -> Principal:
    return make_principal("technologist")


@pytest.fixture
def radiologist() -> Principal:
    return make_principal("radiologist")
