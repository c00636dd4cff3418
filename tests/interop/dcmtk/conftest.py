"""DCMTK interop fixtures: dicomvault's door in-process, DCMTK ``storescp`` as a TLS C-MOVE
destination, and the TLS arguments every DCMTK tool needs (test CA, client certificate)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.dimse.conftest import Door, start_door, stop_door
from tests.integration.dimse.support import TestPki, free_port, make_pki, peer_toml


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"DCMTK tool {tool!r} is required (apt-get install dcmtk)")
    return path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_pki(tmp_path_factory.mktemp("pki"), ("scu", "dest"))


def tls_args(pki: TestPki, name: str = "scu") -> list[str]:
    """DCMTK: mutual TLS with the test CA, BCP195 non-downgrading profile (the default)."""
    cert = pki.clients[name]
    return ["+tls", str(cert.key), str(cert.cert), "-pw", "+cf", str(pki.ca.cert)]


@dataclass
class StoreScp:
    port: int
    out: Path
    proc: subprocess.Popen[bytes]


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"storescp exited early: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail("storescp did not start listening")


@pytest.fixture
def storescp(tmp_path: Path, pki: TestPki) -> Iterator[StoreScp]:
    """DCMTK storescp over TLS, bit-preserving, accepting every transfer syntax."""
    out = tmp_path / "storescp"
    out.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [_require("storescp"), "-aet", "DEST", "+xa", "+B", "-od", str(out),
         *tls_args(pki, "dest"), str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_listening(port, proc)
    yield StoreScp(port, out, proc)
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def door(tmp_path: Path, pki: TestPki, storescp: StoreScp) -> Iterator[Door]:
    peers = peer_toml("SCU", move_destinations=("DEST",))
    peers += peer_toml("DEST", host="127.0.0.1", port=storescp.port, tls=True,
                       services=("echo",))
    d = start_door(tmp_path / "door", pki, peers)
    yield d
    stop_door(d)


@pytest.fixture
def dcmtk() -> dict[str, str]:
    return {t: _require(t) for t in ("echoscu", "storescu", "findscu", "movescu", "getscu")}


class TlsRelay:
    """Plain-TCP → mutual-TLS relay for DCMTK 3.6.7 ``getscu``/``movescu``, which have no TLS
    options (``--enable-tls`` came to them later).  The archive still sees only TLS: the relay
    presents the SCU's client certificate and verifies the archive against the test CA."""

    def __init__(self, pki: TestPki, target_port: int, client: str = "scu") -> None:
        import ssl
        import threading

        self._ctx = ssl.create_default_context(cafile=str(pki.ca.cert))
        cert = pki.clients[client]
        self._ctx.load_cert_chain(str(cert.cert), str(cert.key))
        self._target = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        import threading

        while not self._stop:
            try:
                plain, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(plain,), daemon=True).start()

    def _serve(self, plain: socket.socket) -> None:
        # One thread owns the TLS socket: OpenSSL forbids concurrent SSL_read and
        # SSL_write on one connection (a write racing a read that is processing a
        # TLS 1.3 session ticket can vanish, leaving the peer waiting forever).
        import select
        import ssl

        try:
            raw = socket.create_connection(("127.0.0.1", self._target))
            tls = self._ctx.wrap_socket(raw, server_hostname="localhost")
        except OSError:
            plain.close()
            return
        for s in (plain, tls):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                if tls.pending():
                    ready = [tls]
                else:
                    ready, _, _ = select.select([plain, tls], [], [], 1.0)
                if plain in ready:
                    chunk = plain.recv(65536)
                    if not chunk:
                        break
                    tls.settimeout(30)
                    tls.sendall(chunk)
                if tls in ready:
                    # A readable socket may hold only a non-data record (a session
                    # ticket): wait briefly, then go back to watching both sides.
                    tls.settimeout(0.05)
                    try:
                        chunk = tls.recv(65536)
                    except (TimeoutError, ssl.SSLWantReadError):
                        continue
                    if not chunk:
                        break
                    plain.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (plain, tls):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self._stop = True
        self._listener.close()


@pytest.fixture
def relay(door: Door, pki: TestPki) -> Iterator[TlsRelay]:
    r = TlsRelay(pki, door.port)
    yield r
    r.close()
