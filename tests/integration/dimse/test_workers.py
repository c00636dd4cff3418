"""``dimse.workers = 2``: two processes share the DICOM port, and die with ``serve``.

Associations are shared evenly between the workers (they take connections
in turn by their number of live associations), every C-STORE is acknowledged and indexed, the
serve process itself holds no association, and a SIGKILL of the serve
process takes its workers down with it (no orphan keeps the port or keys).
(Whether the port then refuses connections is not asserted: another process
on the machine may bind the freed port at once.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import build_context
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from tests.integration.dimse.scu import connect, make_ct, store_bytes
from tests.integration.dimse.support import free_port, make_pki, peer_toml, write_config

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "dicomvault"]


class _Door:
    def __init__(self, port: int, pki) -> None:
        self.port = port
        self.pki = pki


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _established_inodes(port: int) -> set[str]:
    """Socket inodes of established TCP connections whose local port is ``port``."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":
                inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    out: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


def _start_serve(tmp_path: Path, workers: int = 2) -> tuple[subprocess.Popen[bytes], int, object]:
    """``dicomvault serve`` with ``workers`` DIMSE workers, once it reports ready."""
    pki = make_pki(tmp_path / "pki", ("scu",))
    port = free_port()
    config = write_config(tmp_path / "dicomvault.toml", tmp_path / "data", pki, port=port,
                          peers=peer_toml("SCU"), extra=f"\n[http]\nport = {free_port()}\n")
    init = subprocess.run([*CLI, "init", "--config", str(config)], capture_output=True, timeout=120)
    assert init.returncode == 0, init.stderr.decode()[-2000:]
    env = dict(os.environ, DICOMVAULT_DIMSE__WORKERS=str(workers), PYTHONUNBUFFERED="1")
    serve = subprocess.Popen([*CLI, "serve", "--config", str(config)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env, start_new_session=True)
    assert serve.stdout is not None
    for raw in iter(serve.stdout.readline, b""):  # "ready" comes after the workers are
        if raw.strip() == b"ready":
            break
    else:
        serve.wait(10)
        pytest.fail("serve exited: " + (serve.stderr.read().decode()[-2000:] if serve.stderr else ""))
    return serve, port, pki


def _kill(serve: subprocess.Popen[bytes], workers: list[int]) -> None:
    for pid in [serve.pid, *workers]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    serve.wait(10)


def test_simultaneous_associations_spread_evenly_over_the_workers(tmp_path):
    """Four peers connecting at once get two associations per worker, round after round,
    also after connections that failed their TLS handshake (their places are given back)."""
    import socket
    from concurrent.futures import ThreadPoolExecutor

    serve, port, pki = _start_serve(tmp_path)
    workers = _children(serve.pid)
    try:
        assert len(workers) == 2
        door = _Door(port, pki)
        contexts = [build_context(CTImageStorage, [ExplicitVRLittleEndian])]
        for round_ in range(3):
            for _ in range(3):  # not TLS: the handshake fails in the worker that accepted it
                with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
                    plain.sendall(b"\x01\x00\x00\x00\x00\x10" + b"\x00" * 16)
                    plain.recv(64)
            with ThreadPoolExecutor(4) as pool:
                assocs = list(pool.map(lambda _: connect(door, contexts=contexts), range(4)))
            try:
                assert all(a.is_established for a in assocs)
                established = _established_inodes(port)
                held = sorted(len(_socket_inodes(pid) & established) for pid in workers)
                assert held == [2, 2], f"round {round_}: {held}"
            finally:
                for assoc in assocs:
                    assoc.release()
            time.sleep(0.3)  # the released associations' threads end and give their places back
    finally:
        _kill(serve, workers)


def test_two_workers_share_the_port_and_die_with_serve(tmp_path):
    serve, port, pki = _start_serve(tmp_path)
    workers: list[int] = []
    try:
        workers = _children(serve.pid)
        assert len(workers) == 2

        door = _Door(port, pki)
        contexts = [build_context(CTImageStorage, [ExplicitVRLittleEndian])]
        assocs = [connect(door, contexts=contexts) for _ in range(4)]
        try:
            assert all(a.is_established for a in assocs)
            established = _established_inodes(port)
            held = {pid: len(_socket_inodes(pid) & established) for pid in [serve.pid, *workers]}
            assert held[serve.pid] == 0, held
            # both serve, two each: the workers take connections in turn by their load
            assert all(held[w] == 2 for w in workers) and sum(held.values()) == 4, held
            for assoc in assocs:
                ds, data = make_ct(PatientName="WORKER^TEST")
                assert store_bytes(assoc, CTImageStorage, ds.SOPInstanceUID,
                                   ExplicitVRLittleEndian, data) == 0x0000
        finally:
            for assoc in assocs:
                assoc.release()

        os.kill(serve.pid, signal.SIGKILL)
        serve.wait(10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.1)
        alive = {w: Path(f"/proc/{w}/stat").read_text() for w in workers if _alive(w)}
        assert not alive, f"workers outlived the serve process: {alive}"
    finally:
        _kill(serve, workers)

    # Everything acknowledged is in the index (a fresh serve is not needed to read it).
    import sqlite3

    with sqlite3.connect(tmp_path / "data" / "index.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM instances").fetchone()[0] == 4


def _written(pid: int) -> int:
    """Bytes the process has written with write(2) and friends (``/proc/<pid>/io``)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/<pid>/io")


def test_stow_parts_are_ingested_by_the_worker_processes(tmp_path):
    """With workers, STOW-RS parts are stored by them (``services.offload``): the blobs are
    written by the worker processes, the client gets the usual answer, and the index and
    the audit trail hold every part."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    from dicomvault.access.principal import system_principal
    from dicomvault.access.tokens import permissions_of
    from dicomvault.config import load_settings
    from dicomvault.services.context import build_services

    serve, _port, pki = _start_serve(tmp_path)
    workers: list[int] = []
    try:
        workers = _children(serve.pid)
        settings = load_settings(tmp_path / "dicomvault.toml", {})
        services = build_services(settings)
        try:
            operator = system_principal("cli")
            user = services.identity.create_user(operator, "stow-worker", {"technologist"})
            token = services.identity.create_api_token(operator, user.user_id, "test",
                                                       permissions_of({"technologist"}), 1).token
        finally:
            services.close()
        session = requests.Session()
        session.trust_env = False
        session.verify = str(pki.ca.cert)
        session.headers["Authorization"] = f"Bearer {token}"
        client = DICOMwebClient(f"https://localhost:{settings.http.port}/dicomweb", session=session)
        datasets = []
        for _ in range(6):
            ds, _data = make_ct(PatientName="STOW^WORKER")
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            datasets.append(ds)
        before = {pid: _written(pid) for pid in [serve.pid, *workers]}
        result = client.store_instances(datasets)
        after = {pid: _written(pid) for pid in [serve.pid, *workers]}
        assert len(result.ReferencedSOPSequence) == 6 and "FailedSOPSequence" not in result
        blob_bytes = sum(len(ds.PixelData) for ds in datasets)
        by_workers = sum(after[w] - before[w] for w in workers)
        assert by_workers >= blob_bytes, (before, after)
    finally:
        _kill(serve, workers)

    import sqlite3

    with sqlite3.connect(tmp_path / "data" / "index.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM instances").fetchone()[0] == 6
        assert db.execute("SELECT count(*) FROM audit_record WHERE event_code = '110104' "
                          "AND door = 'dicomweb' AND outcome = 0").fetchone()[0] == 6
