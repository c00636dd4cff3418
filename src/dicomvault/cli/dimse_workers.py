"""DIMSE worker processes (``dimse.workers`` >= 2): several GILs on the DICOM ports.

The serve process binds the listening sockets and starts the workers with
``python -m dicomvault.cli.dimse_workers``; each inherits the sockets, builds
its own services (database pool, DEK cache, audit trail) from the settings
it reads on stdin, accepts associations and reports "ready" on stdout.  The
workers share a table of their live associations (``dimse.balance``) and take
connections in turn by it.  A
worker ends on SIGTERM, and also when the serve process dies (Linux
``PR_SET_PDEATHSIG``, and a look at its parent every half second), so no
orphan keeps a port or the keys.  Each worker also
ingests the STOW-RS parts the serve process sends it on a private socket pair
(``services.offload``).  Background
jobs (audit checkpoints, syslog forwarding, the orphan sweep) stay in the
serve process.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import IO, Any, cast

from dicomvault.config import Settings
from dicomvault.dimse.balance import WorkerLoad, create_table
from dicomvault.errors import ConfigurationError

MAX_WORKERS = 64
#: Longest a worker spends closing its associations and services on SIGTERM.
STOP_GRACE_SECONDS = 5.0
#: How often a worker's main thread checks for a stop request and for its parent.
PARENT_CHECK_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1
_READY = b"ready\n"


def listening_sockets(settings: Settings) -> dict[str, socket.socket]:
    """Bind the DICOM ports once, in the serve process, for the workers to share."""
    dimse = settings.dimse
    ports = {"tls": dimse.port}
    if dimse.plain_port:
        ports["plain"] = dimse.plain_port
    sockets: dict[str, socket.socket] = {}
    try:
        for name, port in ports.items():
            sock = socket.create_server((dimse.host, port), backlog=128)
            sock.set_inheritable(True)
            sockets[name] = sock
    except OSError:
        for sock in sockets.values():
            sock.close()
        raise
    return sockets


class Workers:
    """The worker processes of one serve process."""

    def __init__(self, settings: Settings, environ: Mapping[str, str],
                 sockets: Mapping[str, socket.socket]) -> None:
        count = settings.dimse.workers
        if not 2 <= count <= MAX_WORKERS:
            raise ConfigurationError(f"dimse.workers: must be between 1 and {MAX_WORKERS}")
        self._procs: list[subprocess.Popen[bytes]] = []
        #: Serve-side ends of the workers' ingest socket pairs (``services.offload``).
        self.ingest_sockets: list[socket.socket] = []
        fds = {name: sock.fileno() for name, sock in sockets.items()}
        load_fd = create_table(count)
        try:
            for slot in range(count):
                ours, theirs = socket.socketpair()
                self.ingest_sockets.append(ours)
                try:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "dicomvault.cli.dimse_workers"],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        pass_fds=(*fds.values(), load_fd, theirs.fileno()), env=dict(os.environ))
                    self._procs.append(proc)
                    stdin = cast(IO[bytes], proc.stdin)
                    stdin.write(pickle.dumps((settings, dict(environ), fds, (load_fd, count, slot),
                                              theirs.fileno())))
                    stdin.close()
                finally:
                    theirs.close()  # the worker holds its own descriptor
        finally:
            os.close(load_fd)  # each worker holds its own descriptor

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Return once every worker accepts associations; raise if one fails to start."""
        for proc in self._procs:
            line = _readline(cast(IO[bytes], proc.stdout), timeout)
            if line != _READY:
                self.stop()
                raise RuntimeError(f"DIMSE worker {proc.pid} failed to start")

    def stop(self, timeout: float = 15.0) -> None:
        for sock in self.ingest_sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self._procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _readline(stream: IO[bytes], timeout: float) -> bytes:
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0] if result else b""


def _die_with_parent(parent: int) -> None:
    """Linux: SIGTERM this process when the serve process dies, whatever kills it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(0)


def main() -> None:
    """Worker entry point: serve DIMSE on the inherited sockets until SIGTERM."""
    parent = os.getppid()
    _die_with_parent(parent)
    from dicomvault.allocator import keep_large_blocks

    keep_large_blocks()
    # The pipe from our own parent, which wrote it (same user, never the network).
    settings, environ, fds, (load_fd, workers, slot), ingest_fd = pickle.load(sys.stdin.buffer)  # noqa: S301
    from dicomvault.dimse.server import DimseServer
    from dicomvault.services.context import build_services
    from dicomvault.services.offload import serve_ingest

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    services = build_services(settings, environ=environ)
    sockets: dict[str, Any] = {name: socket.socket(fileno=fd) for name, fd in fds.items()}
    dimse = DimseServer(services, listen_sockets=sockets, load=WorkerLoad(load_fd, workers, slot))
    def close() -> None:
        dimse.stop()
        services.close()

    try:
        dimse.start()
        serve_ingest(socket.socket(fileno=ingest_fd), services.archive.ingest)
        sys.stdout.buffer.write(_READY)
        sys.stdout.buffer.flush()
        # A bounded wait: a signal delivered to another thread runs its handler only
        # once this thread runs Python again, and a parent gone without the death
        # signal (it was lost, or came from a thread that exited) is noticed too.
        while not stop.wait(PARENT_CHECK_SECONDS):
            if os.getppid() != parent:
                break
    finally:
        # Bounded: an association caught half-way through its teardown can keep
        # pynetdicom's abort waiting; the process ends anyway (the OS closes its sockets).
        closer = threading.Thread(target=close, daemon=True)
        closer.start()
        closer.join(STOP_GRACE_SECONDS)
    os._exit(0)  # listener threads sit in accept(): end without joining them


if __name__ == "__main__":
    main()
