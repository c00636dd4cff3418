"""Worker load table: who may accept, and a pending connection is never held back for long."""

from __future__ import annotations

import os
import socket
import time

import pytest

from dicomvault.dimse.balance import MAX_DEFER, WorkerLoad, create_table


@pytest.fixture
def table():
    fd = create_table(3)
    yield fd
    os.close(fd)


def test_only_the_least_loaded_workers_may_accept(table):
    a, b, c = (WorkerLoad(table, 3, slot) for slot in range(3))
    assert a.least_loaded() and b.least_loaded() and c.least_loaded()
    a.entered()
    assert not a.least_loaded() and b.least_loaded() and c.least_loaded()
    b.entered()
    c.entered()
    assert a.least_loaded() and b.least_loaded() and c.least_loaded()
    a.entered()
    b.left()
    assert (a.mine, b.mine, c.mine) == (2, 0, 1)
    assert [w.least_loaded() for w in (a, b, c)] == [False, True, False]
    b.left()  # never below zero
    assert b.mine == 0


def test_slots_are_shared_through_the_descriptor(table):
    """A second mapping (another process inherits the descriptor) sees the same counts."""
    WorkerLoad(table, 3, 1).entered()
    assert WorkerLoad(table, 3, 2).least_loaded()
    assert not WorkerLoad(table, 3, 1).least_loaded()
    with pytest.raises(ValueError):
        WorkerLoad(table, 3, 3)


def test_a_busier_worker_waits_while_no_connection_is_pending_then_takes_one_after_max_defer(table):
    busy, idle = WorkerLoad(table, 3, 0), WorkerLoad(table, 3, 1)
    busy.entered()
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        # Nothing pending: the busier worker keeps waiting (here until the other gets busier).
        start = time.monotonic()
        idle.entered()
        WorkerLoad(table, 3, 2).entered()
        busy.wait_turn(listener)  # now least loaded: returns at once
        assert time.monotonic() - start < MAX_DEFER
        busy.entered()
        # A connection nobody less loaded takes: the busier worker accepts it after MAX_DEFER.
        client = socket.create_connection(listener.getsockname())
        try:
            start = time.monotonic()
            busy.wait_turn(listener)
            waited = time.monotonic() - start
            assert MAX_DEFER <= waited < MAX_DEFER + 0.5
            conn, _ = listener.accept()
            conn.close()
        finally:
            client.close()
    finally:
        listener.close()
