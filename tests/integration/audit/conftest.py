"""Audit fixtures: a fresh database on each backend with the audit tables and a trail."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

import dicomvault.audit.models  # noqa: F401 - register the tables on Base
from dicomvault.audit.chain import AuditTrail
from dicomvault.crypto.keyring import DataKey, Keyring
from dicomvault.index.base import Base
from dicomvault.index.db import make_engine, make_session_factory


@dataclass
class DekStore:
    """Patient DEKs by key id; ``shred`` forgets one (crypto-shredding)."""

    keys: dict[str, DataKey] = field(default_factory=dict)

    def add(self, key_id: str) -> None:
        self.keys[key_id] = DataKey.generate()

    def shred(self, key_id: str) -> None:
        del self.keys[key_id]

    def __call__(self, key_id: str) -> DataKey | None:
        return self.keys.get(key_id)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    Base.metadata.create_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def deks() -> DekStore:
    store = DekStore()
    store.add("pk-1")
    store.add("pk-2")
    return store


@pytest.fixture
def trail(factory: sessionmaker[Session], keyring: Keyring, deks: DekStore) -> AuditTrail:
    return AuditTrail(factory, keyring, deks, node_id="test-node")
