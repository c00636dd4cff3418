"""Fixtures: a test PKI, a TLS C-MOVE destination, and dicomvault's DIMSE door in-process.

The server runs on port 0 over mutual TLS with the test CA, on a real SQLite
index and blob folder, through ``build_services`` (no mocks).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, AllStoragePresentationContexts, evt

from dicomvault.config import Settings, load_settings
from tests.integration.dimse.support import (
    TestPki,
    make_pki,
    peer_toml,
    write_config,
)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_pki(tmp_path_factory.mktemp("pki"), ("scu", "other", "dest"))


@dataclass
class Receiver:
    """A Storage SCP over mutual TLS that keeps what it receives (C-MOVE destination)."""

    port: int = 0
    received: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    #: Move Originator AE Title of each received C-STORE (PS3.7 9.1.1.1).
    originators: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver(pki: TestPki) -> Iterator[Receiver]:
    import ssl

    rx = Receiver()

    def on_store(event: Any) -> int:
        with rx.lock:
            rx.received[str(event.request.AffectedSOPInstanceUID)] = (
                str(event.context.transfer_syntax), event.request.DataSet.getvalue())
            rx.originators[str(event.request.AffectedSOPInstanceUID)] = str(
                event.request.MoveOriginatorApplicationEntityTitle or "")
        return 0x0000

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pki.clients["dest"].cert), str(pki.clients["dest"].key))
    ctx.load_verify_locations(cafile=str(pki.ca.cert))
    ctx.verify_mode = ssl.CERT_REQUIRED
    ae = AE(ae_title="DEST")
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(str(cx.abstract_syntax), [str(t) for t in AllTransferSyntaxes])
    server = ae.start_server(("127.0.0.1", 0), block=False, ssl_context=ctx,
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert server is not None
    rx.port = int(server.server_address[1])
    yield rx
    ae.shutdown()


DEFAULT_PEERS = (
    ("SCU", {"move_destinations": ("DEST",)}),
    ("STOREONLY", {"services": ("echo", "store")}),
    ("HOSTLOCK", {"allowed_hosts": ("10.1.2.3",)}),
    ("GETONLY", {"services": ("echo", "get")}),
)


@dataclass
class Door:
    """A running DIMSE door and what a test needs to talk to it."""

    server: object
    services: object
    settings: Settings
    pki: TestPki
    data_dir: Path

    @property
    def port(self) -> int:
        return int(self.server.port)  # type: ignore[attr-defined]


def start_door(tmp_path: Path, pki: TestPki, peers: str, extra: str = "",
               plain_port: int = 0) -> Door:
    from dicomvault.crypto.keyring import Keyring, LocalKek
    from dicomvault.dimse.server import DimseServer
    from dicomvault.index.migrate import upgrade
    from dicomvault.services.context import build_services

    data_dir = tmp_path / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    config = write_config(tmp_path / "dicomvault.toml", data_dir, pki, peers=peers, extra=extra,
                          plain_port=plain_port,
                          db_url=f"sqlite:///{tmp_path / 'index.sqlite3'}")
    settings = load_settings(config, {})
    services = build_services(settings, keyring=Keyring(LocalKek.generate(),
                                                        secrets.token_bytes(32)))
    upgrade(services.engine)
    server = DimseServer(services)
    server.start()
    return Door(server, services, settings, pki, data_dir)


def stop_door(door: Door) -> None:
    door.server.stop()  # type: ignore[attr-defined]
    door.services.close()  # type: ignore[attr-defined]


@pytest.fixture
def door(tmp_path: Path, pki: TestPki, receiver: Receiver) -> Iterator[Door]:
    peers = "".join(peer_toml(ae, **fields) for ae, fields in DEFAULT_PEERS)
    peers += peer_toml("DEST", host="127.0.0.1", port=receiver.port, tls=True,
                       services=("echo",))
    peers += peer_toml("PINNED", client_cert_sha256=pki.clients["scu"].sha256)
    d = start_door(tmp_path, pki, peers)
    yield d
    stop_door(d)
