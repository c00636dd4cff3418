"""Crash safety (DESIGN invariant 4): SIGKILL ``dicomvault serve`` during a C-STORE stream.

After a restart every acknowledged instance is retrievable byte-identical, every index row
has an intact blob (fixity), and no blob is left without an index row.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import build_context, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
)

from dicomvault.config import load_settings
from tests.integration.dimse.scu import QR_CONTEXTS, connect, get_roles, make_ct, store_bytes
from tests.integration.dimse.support import free_port, make_pki, peer_toml, write_config

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "dicomvault"]


class _Door:
    """Just enough of the in-process door for the SCU helpers."""

    def __init__(self, port: int, pki) -> None:
        self.port = port
        self.pki = pki


def _serve(config: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([*CLI, "serve", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"serve exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail("serve did not start listening")


def test_sigkill_during_store_stream_loses_no_acknowledged_instance(tmp_path):
    pki = make_pki(tmp_path / "pki", ("scu",))
    port = free_port()
    config = write_config(tmp_path / "dicomvault.toml", tmp_path / "data", pki, port=port,
                          peers=peer_toml("SCU"),
                          extra=f"\n[http]\nport = {free_port()}\n")
    init = subprocess.run([*CLI, "init", "--config", str(config)], capture_output=True,
                          timeout=120)
    assert init.returncode == 0, init.stderr.decode()[-2000:]
    door = _Door(port, pki)
    study = generate_uid()
    acked: dict[str, bytes] = {}
    stop = threading.Event()

    def stream() -> None:
        while not stop.is_set():
            assoc = connect(door, contexts=[build_context(CTImageStorage,
                                                          [ExplicitVRLittleEndian])])
            if not assoc.is_established:
                return
            try:
                while not stop.is_set() and assoc.is_established:
                    ds, data = make_ct(StudyInstanceUID=study)
                    if store_bytes(assoc, ds.SOPClassUID, ds.SOPInstanceUID,
                                   ExplicitVRLittleEndian, data) == 0:
                        acked[ds.SOPInstanceUID] = data
            except (RuntimeError, ValueError, OSError):
                return
            finally:
                if assoc.is_established:
                    assoc.abort()

    server = _serve(config, port)
    sender = threading.Thread(target=stream, daemon=True)
    sender.start()
    deadline = time.monotonic() + 60
    while len(acked) < 25 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(server.pid, signal.SIGKILL)  # mid-stream: the sender is still sending
    server.wait(timeout=10)
    stop.set()
    sender.join(timeout=30)
    assert len(acked) >= 25

    server = _serve(config, port)
    try:
        received: dict[str, bytes] = {}

        def on_store(event):
            received[str(event.request.AffectedSOPInstanceUID)] = \
                event.request.DataSet.getvalue()
            return 0

        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study
        contexts = [build_context(c) for c in QR_CONTEXTS]
        contexts.append(build_context(CTImageStorage, [ExplicitVRLittleEndian]))
        assoc = connect(door, contexts=contexts, roles=get_roles([CTImageStorage]))
        assoc.bind(evt.EVT_C_STORE, on_store)
        final = [s.Status for s, _ in assoc.send_c_get(
            query, StudyRootQueryRetrieveInformationModelGet)][-1]
        assoc.release()
        assert final == 0x0000
        for uid, data in acked.items():
            assert received.get(uid) == data, uid  # every acknowledged instance, intact
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    from dicomvault.index.models import Instance
    from dicomvault.services.context import build_services

    settings = load_settings(config, {})
    services = build_services(settings)
    try:
        report = services.archive.fixity_check()
        assert report.bad == [] and report.missing == []
        with services.read_factory() as s:
            rows = {b for (b,) in s.query(Instance.blob_key).all()}
        assert len(rows) == report.checked == len(received)
        stored_keys = set(services.store.keys())
        assert stored_keys == rows  # no orphan blob, no row without its blob
    finally:
        services.close()
