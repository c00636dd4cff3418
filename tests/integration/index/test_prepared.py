"""``Prepared``: statements on the driver cursor store and read exactly what SQLAlchemy would."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    insert,
    select,
    text,
    update,
)

from dicomvault.index.base import UtcDateTime
from dicomvault.index.db import make_engine
from dicomvault.index.prepared import Prepared

pytestmark = pytest.mark.integration

META = MetaData()
ROWS = Table("prepared_rows", META,
             Column("id", BigInteger, primary_key=True, autoincrement=False),
             Column("name", String(32)), Column("flag", Boolean), Column("at", UtcDateTime),
             Column("blob", LargeBinary), Column("count", Integer, default=7))
WHEN = datetime(2026, 12, 3, 13, 45, 1, 123456, tzinfo=UTC)


@pytest.fixture
def engine(db_url):
    engine = make_engine(db_url)
    META.create_all(engine)
    yield engine
    engine.dispose()


def _row(i: int) -> dict:
    return {"id": i, "name": f"n{i}", "flag": i % 2 == 0, "at": WHEN, "blob": bytes([i]) * 3, "count": i}


def test_inserted_rows_read_back_the_same_through_sqlalchemy(engine):
    with engine.begin() as conn:
        Prepared(insert(ROWS)).execute(conn, _row(1))
        Prepared(insert(ROWS)).executemany(conn, [_row(2), _row(3)])
        conn.execute(insert(ROWS), _row(4))  # the reference: SQLAlchemy's own path
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(select(ROWS).order_by(ROWS.c.id))]
    assert rows == [tuple(_row(i).values()) for i in (1, 2, 3, 4)]


def test_selects_convert_values_by_column_type_and_keep_fixed_parameters(engine):
    with engine.begin() as conn:
        conn.execute(insert(ROWS), [_row(i) for i in (1, 2, 3)])
    newest = Prepared(select(ROWS.c.id, ROWS.c.flag, ROWS.c.at).order_by(ROWS.c.id.desc()).limit(1))
    by_name = Prepared(select(ROWS.c.id, ROWS.c.flag).where(ROWS.c.name == bindparam("b_name")))
    with engine.connect() as conn:
        row = newest.first(conn)
        assert (row.id, row.flag, row.at) == (3, False, WHEN)
        assert row.flag is False and row.at.tzinfo is not None
        assert by_name.first(conn, {"b_name": "n2"}) == (2, True)
        assert by_name.first(conn, {"b_name": "nobody"}) is None


def test_updates_and_python_side_defaults(engine):
    with engine.begin() as conn:
        # ``count`` is left out: its Python-side default needs SQLAlchemy's execution path.
        Prepared(insert(ROWS)).execute(conn, {"id": 9, "name": "d", "flag": True, "at": WHEN, "blob": b""})
        Prepared(update(ROWS).where(ROWS.c.id == bindparam("b_id")).values(count=ROWS.c.count + 1)).execute(
            conn, {"b_id": 9})
    with engine.connect() as conn:
        assert conn.execute(select(ROWS.c.count).where(ROWS.c.id == 9)).scalar_one() == 8


def test_a_rolled_back_transaction_keeps_nothing(engine):
    with pytest.raises(RuntimeError), engine.begin() as conn:
        Prepared(insert(ROWS)).execute(conn, _row(5))
        raise RuntimeError("the unit of work failed")
    with engine.connect() as conn:
        assert conn.execute(select(ROWS.c.id)).all() == []


def test_plain_sql_with_named_parameters_runs_on_every_dialect(engine):
    upsert = Prepared(text(
        "INSERT INTO prepared_rows (id, name, count) VALUES (:id, :name, :n) "
        "ON CONFLICT (id) DO UPDATE SET count = prepared_rows.count + excluded.count"))
    total = Prepared(text("SELECT sum(count) AS total FROM prepared_rows WHERE id >= :since")
                     .columns(total=Integer))
    with engine.begin() as conn:
        upsert.execute(conn, {"id": 1, "name": "a", "n": 2})
        upsert.execute(conn, {"id": 1, "name": "a", "n": 3})
        upsert.execute(conn, {"id": 4, "name": "b", "n": 10})
        assert total.first(conn, {"since": 1}).total == 15
        assert total.first(conn, {"since": 2}).total == 10
        assert total.first(conn, {"since": 5}).total is None
    with engine.connect() as conn:
        assert conn.execute(select(ROWS.c.id, ROWS.c.count).order_by(ROWS.c.id)).all() == [(1, 5), (4, 10)]
