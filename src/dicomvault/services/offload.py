"""Ingest in the worker processes: STOW-RS parts stored on several CPU cores.

Ingest is mostly Python holding one GIL, so the parts of a STOW-RS request
(PS3.18 10.5) ingested by threads of the serve process used about one core
however many threads ran them.  When ``dimse.workers`` >= 2 the worker
processes already hold everything ingest needs (their own services, keys and
database pool), so the serve process sends them the parts: each worker has a
private socket pair to the serve process (``IngestChannel`` on the serve
side, ``serve_ingest`` in the worker), and ``OffloadedIngest`` gives each
part to the worker with the fewest parts in hand.

The same ``ArchiveService.ingest`` runs there, with the same principal and
door, so validation, policy, encryption and the audit record are the ones a
local ingest makes.  A refusal (``DicomVaultError``) comes back as the same
class with its detail and code.  If a worker is gone, its parts fail with
``UnavailableError`` and later ones are stored by the serve process itself; a
worker that does not answer within ``ANSWER_TIMEOUT_SECONDS`` fails its part.

Frames are written by our own processes on a socket pair no one else holds
(as the settings on a worker's stdin): a pickled header, then the raw bytes.
"""

from __future__ import annotations

import itertools
import logging
import pickle
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from dicomvault.access.principal import Principal
from dicomvault.errors import DicomVaultError, UnavailableError
from dicomvault.services.types import IngestResult

LOG = logging.getLogger(__name__)

#: Parts one worker ingests at once (one's fsync overlaps the next one's parsing).
PARTS_PER_WORKER = 2
#: Longest a part waits for its worker's answer; a hung worker fails the part instead of
#: holding the request forever (the worker may still store it: a retry is then a duplicate).
ANSWER_TIMEOUT_SECONDS = 300.0
_REQUEST = struct.Struct(">IQ")  # header length, data length
_REPLY = struct.Struct(">I")

Ingest = Callable[..., IngestResult]


def _read_exactly(sock: socket.socket, size: int) -> bytearray | None:
    """``size`` bytes from ``sock``, or ``None`` if it closes first."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if not n:
            return None
        got += n
    return buf


def _error_reply(exc: BaseException) -> tuple[Any, ...]:
    if isinstance(exc, DicomVaultError):
        return ("refused", type(exc).__name__, exc.detail, exc.code)
    return ("failed", type(exc).__name__)


def _error_class(name: str) -> type[DicomVaultError]:
    """The ``DicomVaultError`` subclass called ``name`` (the base class if none is)."""
    todo: list[type[DicomVaultError]] = [DicomVaultError]
    while todo:
        cls = todo.pop()
        if cls.__name__ == name:
            return cls
        todo.extend(cls.__subclasses__())
    return DicomVaultError


def _raise_reply(reply: tuple[Any, ...]) -> IngestResult:
    kind = reply[0]
    if kind == "stored":
        return reply[1]  # type: ignore[no-any-return]
    if kind == "refused":
        raise _error_class(reply[1])(reply[2], code=reply[3])
    raise RuntimeError(f"ingest failed in the worker process ({reply[1]})")


class IngestChannel:
    """Serve side of one worker's socket pair: send parts, match replies to futures."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._pending: dict[int, Future[IngestResult]] = {}
        self._ids = itertools.count(1)
        self.closed = False
        self._reader = threading.Thread(target=self._read_replies, name="dv-ingest-replies",
                                        daemon=True)
        self._reader.start()

    @property
    def in_hand(self) -> int:
        return len(self._pending)

    def submit(self, principal: Principal, data: bytes, door: str) -> Future[IngestResult]:
        """Send one instance to the worker; the future completes with its ``IngestResult``."""
        future: Future[IngestResult] = Future()
        request_id = next(self._ids)
        header = pickle.dumps((request_id, principal, door), protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            if self.closed:
                raise UnavailableError("the worker process is gone")
            self._pending[request_id] = future
        try:
            with self._send_lock:
                self._sock.sendall(_REQUEST.pack(len(header), len(data)) + header)
                self._sock.sendall(data)
        except OSError:
            self._fail_all()
        return future

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._reader.join(5)

    def _read_replies(self) -> None:
        try:
            while True:
                head = _read_exactly(self._sock, _REPLY.size)
                if head is None:
                    break
                body = _read_exactly(self._sock, _REPLY.unpack(head)[0])
                if body is None:
                    break
                # Written by our own worker process on a private socket pair.
                request_id, reply = pickle.loads(body)  # noqa: S301
                with self._lock:
                    future = self._pending.pop(request_id, None)
                if future is None:
                    continue
                try:
                    future.set_result(_raise_reply(reply))
                except BaseException as exc:  # noqa: BLE001 - the caller's outcome
                    future.set_exception(exc)
        except OSError:
            pass
        finally:
            self._fail_all()

    def _fail_all(self) -> None:
        with self._lock:
            self.closed = True
            pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(UnavailableError("the worker process ended during ingest"))


class OffloadedIngest:
    """``ArchiveService.ingest`` run by the worker processes (see the module docstring)."""

    def __init__(self, channels: Sequence[IngestChannel], local: Ingest,
                 on_stored: Callable[[int], None] | None = None) -> None:
        self._channels = list(channels)
        self._local = local
        self._on_stored = on_stored

    @property
    def capacity(self) -> int:
        """Parts worth sending at once."""
        return PARTS_PER_WORKER * max(1, len(self._channels))

    def __call__(self, principal: Principal, data: bytes, *, door: str) -> IngestResult:
        """Store one instance, as ``ArchiveService.ingest`` (PS3.4 B.2.3 / PS3.18 10.5)."""
        open_channels = [c for c in self._channels if not c.closed]
        if not open_channels:
            return self._local(principal, data, door=door)
        channel = min(open_channels, key=lambda c: c.in_hand)
        try:
            result = channel.submit(principal, data, door).result(ANSWER_TIMEOUT_SECONDS)
        except FutureTimeout:
            raise UnavailableError("the worker process did not answer in time") from None
        if self._on_stored is not None and result.status != "duplicate":
            self._on_stored(len(data))  # the serve process's metrics count it, as for a local ingest
        return result

    def close(self) -> None:
        for channel in self._channels:
            channel.close()


def serve_ingest(sock: socket.socket, ingest: Ingest) -> threading.Thread:
    """Worker side: ingest the parts the serve process sends on ``sock`` until it closes."""
    pool = ThreadPoolExecutor(max_workers=PARTS_PER_WORKER, thread_name_prefix="dv-offload")
    send_lock = threading.Lock()

    def reply(request_id: int, outcome: tuple[Any, ...]) -> None:
        body = pickle.dumps((request_id, outcome), protocol=pickle.HIGHEST_PROTOCOL)
        with send_lock:
            try:
                sock.sendall(_REPLY.pack(len(body)) + body)
            except OSError:
                pass  # the serve process is gone: its callers failed already

    def one(request_id: int, principal: Principal, door: str, data: bytes) -> None:
        try:
            outcome: tuple[Any, ...] = ("stored", ingest(principal, data, door=door))
        except BaseException as exc:  # noqa: BLE001 - every outcome goes back to the caller
            if not isinstance(exc, DicomVaultError):
                LOG.exception("offloaded ingest failed")
            outcome = _error_reply(exc)
        reply(request_id, outcome)

    def loop() -> None:
        try:
            while True:
                head = _read_exactly(sock, _REQUEST.size)
                if head is None:
                    break
                header_size, data_size = _REQUEST.unpack(head)
                header = _read_exactly(sock, header_size)
                data = _read_exactly(sock, data_size)
                if header is None or data is None:
                    break
                # Written by the serve process (our parent) on a private socket pair.
                request_id, principal, door = pickle.loads(header)  # noqa: S301
                pool.submit(one, request_id, principal, door, bytes(data))
        except OSError:
            pass
        finally:
            pool.shutdown(wait=True)
            sock.close()

    thread = threading.Thread(target=loop, name="dv-offload-reader", daemon=True)
    thread.start()
    return thread
