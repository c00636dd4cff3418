"""Spread associations evenly over the DIMSE worker processes.

Workers share one listening socket.  Left to the kernel, whichever process
calls ``accept`` first takes the next connection; when several peers connect
at once (a modality opening 4 associations, say) one worker often took 3 or
all 4 of them and ran them on one GIL while the other idled.  Here each
worker publishes its number of live associations in a shared-memory table
(one slot per worker); a worker with more than the least loaded one stays
out of ``accept`` and lets a less loaded worker take the connection, unless
the connection has waited ``MAX_DEFER`` seconds (a stuck or dead worker
never holds connections back).
"""

from __future__ import annotations

import mmap
import os
import select
import socket
import struct
import threading
import time

#: Longest a pending connection is left for a less loaded worker (seconds).
MAX_DEFER = 0.05
#: How often a deferring worker looks again while a connection is pending (seconds).
TURN_POLL = 0.002
#: How long a busier worker waits for a connection to appear before re-reading the loads
#: (seconds): a pending connection wakes it at once, so this only bounds idle wake-ups,
#: each of which takes the GIL from the worker's associations.
IDLE_POLL = 0.05
_SLOT = struct.Struct("=q")


def create_table(workers: int) -> int:
    """A zeroed shared-memory table for ``workers`` slots; returns its (inheritable) descriptor."""
    fd = os.memfd_create("dicomvault-dimse-load", 0)
    os.ftruncate(fd, _SLOT.size * workers)
    os.set_inheritable(fd, True)
    return fd


class WorkerLoad:
    """This worker's slot in the table, and the view of the others'."""

    def __init__(self, fd: int, workers: int, slot: int) -> None:
        if not 0 <= slot < workers:
            raise ValueError("slot out of range")
        self._map = mmap.mmap(fd, _SLOT.size * workers)
        self._workers = workers
        self._offset = slot * _SLOT.size
        self._lock = threading.Lock()  # accept loop and association threads share the slot

    def _read(self, slot: int) -> int:
        return int(_SLOT.unpack_from(self._map, slot * _SLOT.size)[0])

    @property
    def mine(self) -> int:
        return int(_SLOT.unpack_from(self._map, self._offset)[0])

    def least_loaded(self) -> bool:
        """No other worker holds fewer live associations than this one."""
        mine = self.mine
        return all(self._read(k) >= mine for k in range(self._workers))

    def entered(self) -> None:
        """An association was accepted here."""
        with self._lock:
            _SLOT.pack_into(self._map, self._offset, self.mine + 1)

    def left(self) -> None:
        """An association accepted here ended (or never got going)."""
        with self._lock:
            _SLOT.pack_into(self._map, self._offset, max(0, self.mine - 1))

    def wait_turn(self, sock: socket.socket) -> None:
        """Return when this worker should ``accept``: it is the least loaded, or a connection
        has been pending for ``MAX_DEFER`` seconds without another worker taking it."""
        pending_since: float | None = None
        while not self.least_loaded():
            if not select.select([sock], [], [], IDLE_POLL)[0]:
                pending_since = None  # nothing waiting (or another worker took it)
                continue
            now = time.monotonic()
            if pending_since is None:
                pending_since = now
            elif now - pending_since >= MAX_DEFER:
                return
            time.sleep(TURN_POLL)
