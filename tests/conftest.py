"""Shared fixtures: database backends, keyrings, settings.

``db_url`` is parametrised over SQLite and PostgreSQL.  PostgreSQL is the
server on 127.0.0.1:5432 (trust auth); each test gets a throw-away database so
parallel runs never collide.  If the server is unreachable the PostgreSQL
tests *fail* (CI must not silently skip them); set
``DICOMVAULT_TEST_BACKENDS=sqlite`` to run SQLite only on a laptop.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

PG_ADMIN_URL = os.environ.get(
    "DICOMVAULT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BACKENDS = os.environ.get("DICOMVAULT_TEST_BACKENDS", "sqlite,postgresql").split(",")


def _pg_database() -> Iterator[str]:
    name = f"dvtest_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - turn any connection error into a failure
        admin.dispose()
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required for this test: {exc}")
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'index.sqlite3'}"
    else:
        yield from _pg_database()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database (always PostgreSQL)."""
    yield from _pg_database()


@pytest.fixture
def keyring():
    """An in-memory keyring with a random KEK and root secret."""
    from dicomvault.crypto.keyring import Keyring, LocalKek

    return Keyring(LocalKek.generate(), secrets.token_bytes(32))
