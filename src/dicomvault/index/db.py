"""Engine and unit-of-work helpers for SQLite (default) and PostgreSQL.

SQLite runs in WAL mode with ``synchronous=FULL`` (an acknowledged commit is
on disk) and ``BEGIN IMMEDIATE`` transactions, so concurrent writers queue on
the database lock instead of failing half-way.  PostgreSQL uses its own
locking; the audit chain takes an advisory lock for its head.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """Create the engine for ``url`` with the durability settings above."""
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 60, "isolation_level": None},
            pool_size=pool_size,
            max_overflow=pool_size,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        gate = _WriterGate(Path(path + ".writers")) if path and path != ":memory:" else None

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # pysqlite's own BEGIN is deferred; writers must take the lock up
            # front so read-then-write transactions (audit head) serialise.
            # Read-only units of work opt out (``read_only_engine``) so that
            # queries run concurrently under WAL.
            # On the driver connection: every unit of work begins here, and
            # ``exec_driver_sql`` costs about 80 µs of SQLAlchemy execution
            # machinery for a statement that returns nothing.
            driver = conn.connection.dbapi_connection
            if conn.get_execution_options().get("dv_read_only"):
                driver.execute("BEGIN")
                return
            if gate is not None:
                gate.acquire(conn.connection.info)
            try:
                driver.execute("BEGIN IMMEDIATE")
            except BaseException:
                if gate is not None:
                    gate.release(conn.connection.info)
                raise

        if gate is not None:
            @event.listens_for(engine, "commit")
            @event.listens_for(engine, "rollback")
            def _sqlite_end(conn: Any) -> None:
                gate.release(conn.connection.info)

            @event.listens_for(engine, "close")
            def _sqlite_close(_dbapi_conn: Any, record: Any) -> None:
                gate.forget(record.info)

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


class _WriterGate:
    """Queue SQLite writers on a lock file (``flock``) before ``BEGIN IMMEDIATE``.

    SQLite's own busy handler sleeps and retries (1, 2, 5, 10 … ms); between
    processes (DIMSE workers) that turns every collision into milliseconds of
    idle wait.  A blocking ``flock`` wakes the next writer as soon as the
    previous one commits or rolls back.  Each connection holds its own open
    file, so threads of one process queue on it too.
    """

    def __init__(self, path: Path) -> None:
        self._path = path

    def _fd(self, info: dict[str, Any]) -> int:
        fd = info.get("dv_writer_fd")
        if fd is None:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            info["dv_writer_fd"] = fd
        return int(fd)

    def acquire(self, info: dict[str, Any]) -> None:
        fcntl.flock(self._fd(info), fcntl.LOCK_EX)
        info["dv_writer_held"] = True

    def release(self, info: dict[str, Any]) -> None:
        if info.pop("dv_writer_held", False):
            fcntl.flock(self._fd(info), fcntl.LOCK_UN)

    def forget(self, info: dict[str, Any]) -> None:
        self.release(info)
        fd = info.pop("dv_writer_fd", None)
        if fd is not None:
            os.close(fd)


def read_only_engine(engine: Engine) -> Engine:
    """The same pool, for read-only units of work (no write lock on SQLite)."""
    return engine.execution_options(dv_read_only=True)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One session per unit of work: commit on success, roll back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def is_postgresql(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"
