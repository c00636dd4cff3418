"""Group commit (index/group_commit.py) on SQLite and PostgreSQL: shared commits, isolated failures."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, insert, select
from sqlalchemy.orm import Session

from dicomvault.index.db import make_engine, make_session_factory
from dicomvault.index.group_commit import GroupCommitter

_META = MetaData()
_ITEMS = Table("gc_items", _META, Column("id", Integer, primary_key=True),
               Column("name", String(32), unique=True, nullable=False))
_CHILDREN = Table("gc_children", _META, Column("id", Integer, primary_key=True),
                  Column("item_id", Integer, ForeignKey("gc_items.id", deferrable=True,
                                                        initially="DEFERRED"), nullable=False))


@pytest.fixture
def factory(db_url: str) -> Iterator:
    engine = make_engine(db_url, pool_size=4)
    _META.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


def _names(factory) -> set[str]:
    with factory() as s:
        return set(s.execute(select(_ITEMS.c.name)).scalars())


def _add(name: str):
    def work(session: Session) -> str:
        session.connection().execute(insert(_ITEMS).values(name=name))
        return name
    return work


def test_lone_unit_commits_and_returns_its_value(factory) -> None:
    committer = GroupCommitter(factory)
    assert committer.run(_add("a")) == "a"
    assert _names(factory) == {"a"}


def test_lone_failing_unit_raises_and_leaves_nothing(factory) -> None:
    committer = GroupCommitter(factory)

    def fails(session: Session) -> None:
        session.connection().execute(insert(_ITEMS).values(name="half"))
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        committer.run(fails)
    assert _names(factory) == set()


def _run_batch(committer: GroupCommitter, works: list) -> list[object]:
    """Run ``works`` from concurrent threads, all queued behind a leader held at a gate,
    so that they form one batch; returns each one's value or exception."""
    gate, entered = threading.Event(), threading.Event()
    outcomes: dict[int, object] = {}

    def held(session: Session) -> str:
        entered.set()
        assert gate.wait(10)
        return "leader"

    def call(k: int, work) -> None:
        try:
            outcomes[k] = committer.run(work)
        except Exception as exc:  # noqa: BLE001 - recorded for the assertions
            outcomes[k] = exc

    leader = threading.Thread(target=call, args=(-1, held))
    leader.start()
    assert entered.wait(10)
    threads = [threading.Thread(target=call, args=(k, w)) for k, w in enumerate(works)]
    for t in threads:
        t.start()
    while len(committer._queue) < len(works):
        threading.Event().wait(0.01)
    gate.set()
    for t in [leader, *threads]:
        t.join(10)
    return [outcomes[k] for k in range(len(works))]


def test_queued_units_share_one_transaction_and_a_failing_one_rolls_back_alone(factory) -> None:
    committer = GroupCommitter(factory)

    def duplicate(session: Session) -> None:
        session.connection().execute(insert(_ITEMS).values(name="dup-partial"))
        raise ValueError("this unit only")

    outcomes = _run_batch(committer, [_add("b1"), duplicate, _add("b2"), _add("b3")])
    assert outcomes[0] == "b1" and outcomes[2] == "b2" and outcomes[3] == "b3"
    assert isinstance(outcomes[1], ValueError)
    assert _names(factory) == {"b1", "b2", "b3"}  # the failed unit's row was rolled back


def test_unique_violation_in_a_batch_fails_only_that_unit(factory) -> None:
    committer = GroupCommitter(factory)
    committer.run(_add("taken"))
    outcomes = _run_batch(committer, [_add("c1"), _add("taken"), _add("c2")])
    assert outcomes[0] == "c1" and outcomes[2] == "c2"
    assert "IntegrityError" in type(outcomes[1]).__name__
    assert _names(factory) == {"taken", "c1", "c2"}


def test_without_isolation_one_failure_fails_the_whole_batch(factory) -> None:
    committer = GroupCommitter(factory, isolate=False)

    def fails(session: Session) -> None:
        raise RuntimeError("batch fails")

    outcomes = _run_batch(committer, [_add("d1"), fails, _add("d2")])
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    assert _names(factory) == set()


def test_a_failed_commit_fails_every_caller_of_the_batch(factory) -> None:
    committer = GroupCommitter(factory)

    def orphan(session: Session) -> str:
        # A deferred foreign key: the statement passes, the COMMIT fails.
        session.connection().execute(insert(_CHILDREN).values(item_id=999_999))
        return "orphan"

    outcomes = _run_batch(committer, [_add("e1"), orphan])
    assert all(isinstance(o, Exception) and "IntegrityError" in type(o).__name__ for o in outcomes)
    assert _names(factory) == set()
    assert committer.run(_add("after")) == "after"  # the committer goes on
    assert _names(factory) == {"after"}


def test_deferred_work_is_not_committed_until_flushed(factory) -> None:
    committer = GroupCommitter(factory)
    committer.defer(_add("later"), delay=60)
    assert _names(factory) == set()
    committer.flush()
    assert _names(factory) == {"later"}
    committer.flush()  # nothing queued: no error, nothing new
    assert _names(factory) == {"later"}


def test_deferred_work_joins_the_next_callers_commit_in_order(factory) -> None:
    committer = GroupCommitter(factory)
    order: list[str] = []

    def step(name: str):
        def work(session: Session) -> str:
            order.append(name)
            return _add(name)(session)
        return work

    committer.defer(step("deferred"), delay=60)
    assert committer.run(step("now")) == "now"
    assert order == ["deferred", "now"]
    assert _names(factory) == {"deferred", "now"}


def test_deferred_work_commits_by_itself_within_its_delay(factory) -> None:
    import time

    committer = GroupCommitter(factory)
    committer.defer(_add("alone"), delay=0.05)
    deadline = time.monotonic() + 10
    while "alone" not in _names(factory) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _names(factory) == {"alone"}


def test_a_failed_deferred_unit_is_logged_and_does_not_block_later_work(factory, caplog) -> None:
    committer = GroupCommitter(factory)
    committer.run(_add("taken"))
    committer.defer(_add("taken"), delay=60)  # unique violation when it commits
    committer.flush()
    assert "deferred unit of work was not committed" in caplog.text
    assert committer.run(_add("after")) == "after"
    assert _names(factory) == {"taken", "after"}
