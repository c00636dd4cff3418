"""The Alembic migrations produce exactly the models' schema, on both backends."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from dicomvault.index.db import make_engine
from dicomvault.index.migrate import current, upgrade
from dicomvault.index.schema import metadata

pytestmark = pytest.mark.integration


def test_migrations_match_models(db_url):
    engine = make_engine(db_url)
    upgrade(engine)
    assert current(engine) is not None
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    engine.dispose()
    assert diff == []


def test_upgrade_is_idempotent(db_url):
    engine = make_engine(db_url)
    upgrade(engine)
    first = current(engine)
    upgrade(engine)
    assert current(engine) == first
    engine.dispose()
