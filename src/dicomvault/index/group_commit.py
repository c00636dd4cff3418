"""Group commit: units of work from many threads share one transaction and one commit.

A commit waits for its log to reach the disk (SQLite WAL with
``synchronous=FULL``, PostgreSQL's WAL flush: an fsync, about 2 ms here)
while it holds the write lock, so concurrent writers queue behind one
another's fsyncs.  Here callers queue their units of work; one of them, the
leader, runs every queued unit in one transaction and commits once.  Each
caller returns only after the commit that holds its work, or raises.

``isolate=True`` runs each unit of a batch in its own SAVEPOINT, so a unit
that fails rolls back alone and its caller gets its own error while the
others commit.  A lone unit runs without a savepoint (nothing to isolate it
from).  If the commit itself fails, every caller of the batch gets that error.

``defer`` queues a unit without waiting for it: it commits with the next
caller's batch, or by a flusher thread after ``delay`` seconds, whichever
comes first; ``flush`` commits everything queued so far.  Only for work
whose loss in a crash within that delay is acceptable (the closing record
of a retrieve whose start was already recorded synchronously).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")

LOG = logging.getLogger(__name__)


class _Unit(Generic[T]):
    """One caller's unit of work and, once its batch is done, its outcome."""

    __slots__ = ("work", "done", "value", "error")

    def __init__(self, work: Callable[[Session], T]) -> None:
        self.work = work
        self.done = False
        self.value: T | None = None
        self.error: BaseException | None = None

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


class GroupCommitter:
    """Runs units of work from concurrent threads in shared transactions."""

    def __init__(self, factory: sessionmaker[Session], *, max_batch: int = 16,
                 isolate: bool = True) -> None:
        self._factory = factory
        self.max_batch = max_batch
        self._isolate = isolate
        self._cv = threading.Condition()
        self._queue: list[_Unit[Any]] = []
        self._leader = False
        self._deferred: list[_Unit[Any]] = []
        self._flusher: threading.Thread | None = None
        self._delay = 0.0

    def run(self, work: Callable[[Session], T]) -> T:
        """Run ``work(session)`` in a transaction; return its value once committed."""
        unit: _Unit[T] = _Unit(work)
        with self._cv:
            self._queue.append(unit)
            while not unit.done and self._leader:
                self._cv.wait()
            if unit.done:
                return unit.outcome()
            self._leader = True
        try:
            while not unit.done:
                with self._cv:
                    batch = self._queue[: self.max_batch]
                    del self._queue[: len(batch)]
                self._commit(batch)
                with self._cv:
                    self._cv.notify_all()
        finally:
            with self._cv:
                self._leader = False
                self._cv.notify_all()
        return unit.outcome()

    def defer(self, work: Callable[[Session], object], delay: float = 0.05) -> None:
        """Queue ``work`` to commit within ``delay`` seconds (or sooner, with the next batch);
        do not wait.  A failure is logged: nobody is waiting for it."""
        unit: _Unit[Any] = _Unit(work)
        with self._cv:
            self._queue.append(unit)
            self._deferred.append(unit)
            self._delay = delay
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_loop, name="dv-group-commit-flush",
                                                 daemon=True)
                self._flusher.start()
            self._cv.notify_all()

    def flush(self) -> None:
        """Commit every unit queued so far, deferred ones included (FIFO: an empty unit
        queued after them is done only once they are)."""
        with self._cv:
            pending = any(not unit.done for unit in self._deferred)
        try:
            if pending:
                self.run(lambda _session: None)
        finally:
            self._report_deferred()

    def _flush_loop(self) -> None:
        while True:
            with self._cv:
                while not self._deferred:
                    self._cv.wait()
                delay = self._delay
            time.sleep(delay)
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - reported per unit below; the loop must go on
                LOG.exception("deferred commit failed")

    def _report_deferred(self) -> None:
        with self._cv:
            done = [unit for unit in self._deferred if unit.done]
            self._deferred = [unit for unit in self._deferred if not unit.done]
        for unit in done:
            if unit.error is not None:
                LOG.error("deferred unit of work was not committed: %r", unit.error)

    def _commit(self, batch: list[_Unit[Any]]) -> None:
        try:
            with self._factory() as session, session.begin():
                if len(batch) == 1 or not self._isolate:
                    for unit in batch:
                        unit.value = unit.work(session)
                else:
                    for unit in batch:
                        try:
                            with session.begin_nested():
                                unit.value = unit.work(session)
                        except Exception as exc:  # noqa: BLE001 - this unit's own outcome
                            unit.error = exc
        except BaseException as exc:  # noqa: BLE001 - the batch did not commit: all of it fails
            for unit in batch:
                if unit.error is None:
                    unit.error = exc
        for unit in batch:
            unit.done = True
