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


def test_upgrade_to_0004_fills_rate_buckets_from_recent_retrieves(db_url):
    """Revision 0004 derives the bulk rule's buckets from the retrieve records of the last
    7 days (successful retrieves only), so the rule's bound holds right after the upgrade."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import text

    engine = make_engine(db_url)
    upgrade(engine, "0003")
    now = datetime.now(UTC).replace(microsecond=0)
    rows = [  # (user, age, code, action, outcome, instances)
        ("u:eve", timedelta(seconds=30), "110104", "R", 0, 40),
        ("u:eve", timedelta(seconds=31), "110106", "E", 0, 2),
        ("u:eve", timedelta(seconds=32), "110104", "C", 0, 500),  # a store: not counted
        ("u:eve", timedelta(seconds=33), "110104", "R", 4, 500),  # failed: not counted
        ("u:eve", timedelta(days=8), "110104", "R", 0, 500),  # beyond the horizon
        ("u:dan", timedelta(hours=2), "110106", "R", 0, 9),
    ]
    with engine.begin() as conn:
        for seq, (user, age, code, action, outcome, count) in enumerate(rows, start=1):
            conn.execute(text(
                "INSERT INTO audit_record (seq, event_time, recorded_at, event_code, action, outcome, "
                "user_id, door, instance_count, body, prev_hash, hash) VALUES (:seq, :t, :t, :code, "
                ":action, :outcome, :user, 'dicomweb', :n, '{}', :h, :h)"),
                {"seq": seq, "t": now - age, "code": code, "action": action, "outcome": outcome,
                 "user": user, "n": count, "h": bytes(32)})
    upgrade(engine)
    with engine.connect() as conn:
        got = conn.execute(text("SELECT rule, subject, sum(total) FROM audit_rate_bucket "
                                "GROUP BY rule, subject ORDER BY subject")).all()
    engine.dispose()
    assert [tuple(r) for r in got] == [("bulk_retrieval", "u:dan", 9), ("bulk_retrieval", "u:eve", 42)]
