"""DIMSE benchmark: dicomvault against Orthanc 1.10, same workload, same run (issue 2).

Prints ONE JSON line with our figures, Orthanc's, and the ratios ours/Orthanc:

* C-STORE over TLS (mutual TLS, BCP195 suites) of N synthetic 512x512 16-bit CT
  instances (~0.5 MB each; default N = 2,000) sent by DCMTK ``storescu`` over
  1 and over 4 parallel associations: instances/s and MB/s (wall clock from the
  first ``storescu`` start to the last exit, summed over 4 slices of the files:
  both servers run at once and take turns per slice, the order alternating, so
  a shared machine's drift in speed hits both alike; every instance must be
  acknowledged and found in the server's index afterwards, else the run fails); ``storescu``
  runs with ``TCP_NODELAY=1`` too (DCMTK reads it), so the client's own Nagle
  stalls are not timed;
* peak RSS of each server process during ingest (max of sampled VmRSS and VmHWM);
* C-FIND at STUDY level (Study Root), by PatientID and by PatientName wildcard:
  p50/p95 over Q queries sent by pynetdicom in-process over one TLS association
  per server (process start excluded), against the data of the 4-association
  runs: both servers run at once and each query goes to both in turn (order
  alternating), so a shared machine's drift in speed hits both alike;
* dicomvault's C-FIND p50/p95 on an index of 100,000 instances (see ``--seed``);
* audit overhead: C-STORE rate (1 association, N/2 instances) with auditing on
  divided by the rate of a run whose ``AuditTrail.append`` is a no-op (bench-only
  monkeypatch in the benchmarked server process; a measurement, not a product
  setting); paired runs on, off, on, off, means of each side, both with
  ``dimse.workers = 1`` (the monkeypatch lives in the serve process);
* dicomvault runs with ``dimse.workers`` = the number of CPU cores (as an
  operator would configure it; ``DICOMVAULT_BENCH_WORKERS`` overrides), and its
  peak RSS is the sum over the serve process and its workers.

Everything runs inside a private network namespace (the script re-executes
itself under ``unshare -n`` and brings ``lo`` up), because Orthanc cannot bind
its DICOM port to loopback alone.  Orthanc runs from a temp folder with its own
JSON config, ``TCP_NODELAY=1`` in its environment and DICOM TLS on, with
certificates from a CA the bench generates (dicomvault uses the same CA and
server certificate through its ``[tls]`` settings, and ``dicomvault init`` /
``dicomvault serve`` as an operator would).  Both servers fsync the files they
store (Orthanc's ``SyncStorageArea`` default, dicomvault's durable writes); their
indexes differ: Orthanc's SQLite runs ``SYNCHRONOUS=NORMAL`` (a commit does not
wait for the disk), ours ``synchronous=FULL`` (every acknowledged commit, and so
every audit record, is on disk).  Each ingest run starts after ``os.sync()``, so
neither server competes with write-back the generator or a previous run left.

Seeding the 100,000-instance index (``--seed``, run in a child process): for
each series one real instance goes through ``ArchiveService.ingest`` (parse,
policy, patient DEK, encrypted PHI columns, blind-index tokens, encrypted
blob, audit record), then the series' other instances are inserted as index
rows in bulk (the rows ``Ingestor._commit`` writes, counters updated; their
blobs are not written since C-FIND never reads blobs).  Layout: 100 instances
per study (2 series x 50), 2 studies per patient (1,000 studies, 500 patients).
Seeding only: SQLite ``synchronous=OFF`` and no fsync (it is not measured).

Usage: ``python bench/bench_dimse.py [--quick] [--no-orthanc] [--keep]`` (root,
DCMTK and the Debian ``orthanc`` package installed).  ``--quick`` is a smoke
run (200 instances, 40 queries, a 10,000-instance index).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
VENV_BIN = Path(sys.executable).parent
NETNS_MARK = "DICOMVAULT_BENCH_NETNS"
SCU_AE = "BENCHSCU"
DV_AE = "DICOMVAULT"
ORTHANC_AE = "ORTHANC"
DV_PORT, DV_HTTP_PORT = 11112, 18443
#: Slices of the C-STORE workload, each server taking its turn per slice (``store_rounds``).
ROUNDS = 4
#: ``dimse.workers`` as an operator would set it on this machine: one per core.
DV_WORKERS = int(os.environ.get("DICOMVAULT_BENCH_WORKERS", os.cpu_count() or 1))
ORTHANC_PORT, ORTHANC_HTTP_PORT = 4242, 8042
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
INSTANCES_PER_STUDY = 100
SERIES_PER_STUDY = 2
STUDIES_PER_PATIENT = 2


def log(msg: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


# -- identities of the synthetic data (shared by the CT files, the seed and the queries) -------
def patient_id(p: int) -> str:
    return f"BENCH{p:06d}"


def patient_name(p: int) -> str:
    return f"PAT{p:06d}^BENCH"


def name_wildcard(p: int) -> str:
    """A prefix wildcard matching patients p//10*10 .. p//10*10+9 (PS3.4 C.2.2.2.4)."""
    return f"pat{p // 10:05d}*"  # lower case: PN matching is case-insensitive


def _uid(root: str, *parts: int) -> str:
    return root + ".".join(str(x) for x in parts)


def study_uid(run: str, s: int) -> str:
    return _uid(f"1.2.826.0.1.3680043.8.498.{run}.1.", s)


def series_uid(run: str, s: int, k: int) -> str:
    return _uid(f"1.2.826.0.1.3680043.8.498.{run}.2.", s, k)


def sop_uid(run: str, s: int, k: int, i: int) -> str:
    return _uid(f"1.2.826.0.1.3680043.8.498.{run}.3.", s, k, i)


def ct_dataset(run: str, s: int, k: int, i: int, pixels: bytes | None) -> Any:
    """One synthetic CT instance of study ``s`` (patient s // 2), series ``k``, number ``i``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    p = s // STUDIES_PER_PATIENT
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid(run, s, k, i)
    ds.StudyDate = f"2024{1 + s % 12:02d}{1 + s % 28:02d}"
    ds.SeriesDate = ds.StudyDate
    ds.StudyTime = "101500"
    ds.AccessionNumber = f"ACC{s:07d}"
    ds.Modality = "CT"
    ds.Manufacturer = "bench"
    ds.ReferringPhysicianName = "REFERRER^DR"
    ds.StudyDescription = "CT CHEST WITH CONTRAST"
    ds.SeriesDescription = f"AXIAL {k}"
    ds.PatientName = patient_name(p)
    ds.PatientID = patient_id(p)
    ds.PatientBirthDate = f"19{50 + p % 50:02d}0101"
    ds.PatientSex = "MF"[p % 2]
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = "1.0"
    ds.StudyInstanceUID = study_uid(run, s)
    ds.SeriesInstanceUID = series_uid(run, s, k)
    ds.StudyID = str(s)
    ds.SeriesNumber = k + 1
    ds.InstanceNumber = i + 1
    ds.ImagePositionPatient = [0, 0, float(i)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = study_uid(run, s) + ".9"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    side = 512 if pixels is not None else 8
    ds.Rows = side
    ds.Columns = side
    ds.PixelSpacing = [0.7, 0.7]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.PixelData = pixels if pixels is not None else bytes(side * side * 2)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def layout(n: int) -> list[tuple[int, int, int]]:
    """(study, series, number) of ``n`` instances, 100 per study in 2 series."""
    per_series = INSTANCES_PER_STUDY // SERIES_PER_STUDY
    return [(j // INSTANCES_PER_STUDY, (j % INSTANCES_PER_STUDY) // per_series, j % per_series)
            for j in range(n)]


def generate_ct(folder: Path, n: int, run: str) -> int:
    """Write ``n`` CT files (Explicit VR LE, 512x512x16 bit); returns the total bytes."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[-256:256, -256:256]
    body = ((xx ** 2 + yy ** 2) < 200 ** 2) * 1040
    total = 0
    for j, (s, k, i) in enumerate(layout(n)):
        if j % 50 == 0:  # fresh noise now and then: realistic, not one repeated image
            noise = rng.integers(-40, 40, size=(512, 512), dtype=np.int16)
            pixels = (body + noise - 1024).astype("<i2").tobytes()
        path = folder / f"ct{j:05d}.dcm"
        ct_dataset(run, s, k, i, pixels).save_as(path, enforce_file_format=True)
        total += path.stat().st_size
    return total


# -- PKI ------------------------------------------------------------------------------------------
@dataclass
class Pki:
    ca: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(folder: Path) -> Pki:
    """A CA (ECDSA P-256, ``dicomvault.crypto.pki``), one server and one client certificate."""
    from dicomvault.crypto import pki

    ca = pki.create_local_ca(folder / "ca.crt", folder / "ca.key")
    pki.issue_certificate(ca, "localhost", folder / "server.crt", folder / "server.key",
                          client=True, server=True, names=("127.0.0.1",))
    pki.issue_certificate(ca, SCU_AE.lower(), folder / "scu.crt", folder / "scu.key",
                          client=True, server=False)
    return Pki(ca.cert, ca.key, folder / "server.crt", folder / "server.key",
               folder / "scu.crt", folder / "scu.key")


def client_context(p: Pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(p.ca))
    ctx.check_hostname = False  # we connect to 127.0.0.1; the chain is still verified
    ctx.load_cert_chain(str(p.client_cert), str(p.client_key))
    return ctx


# -- process helpers ------------------------------------------------------------------------------
class RssSampler:
    """Peak resident set of a server: its process and child processes (DIMSE workers).

    Sampled VmRSS summed over the tree; for a single process also the kernel's VmHWM.
    """

    def __init__(self, pid: int, period: float = 0.05) -> None:
        self.pid = pid
        self.peak_kb = 0
        self._stop = threading.Event()
        self._period = period
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> None:
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        except OSError:
            children = []
        total = 0
        for pid in [str(self.pid), *children]:
            try:
                text = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                elif line.startswith("VmHWM:") and not children:
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))
        self.peak_kb = max(self.peak_kb, total)

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self._read()

    def start(self) -> RssSampler:
        self._read()
        self._thread.start()
        return self

    def stop(self) -> float:
        self._read()
        self._stop.set()
        self._thread.join()
        return round(self.peak_kb / 1024, 1)


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} not listening after {timeout}s")


def wait_ready(log_file: Path, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Wait for ``dicomvault serve`` to print "ready" (its DIMSE workers and HTTPS are up).

    The listening port accepts connections before that: it is bound before the worker
    processes start, and an association waits in the backlog until one of them is up.
    Timing from the open port charged their start (1–2 s) to the first measurement.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        if any(line.strip() == "ready" for line in log_file.read_text(errors="replace").splitlines()):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server not ready after {timeout}s")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- servers ----------------------------------------------------------------------------------------
@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    called_ae: str
    count: Callable[[], int]
    folder: Path
    logs: list[Path] = field(default_factory=list)


def dv_config(folder: Path, p: Pki) -> Path:
    data = folder / "data"
    cfg = folder / "dicomvault.toml"
    cfg.write_text(f"""
data_dir = "{data}"

[dimse]
ae_title = "{DV_AE}"
host = "127.0.0.1"
port = {DV_PORT}
workers = {DV_WORKERS}

[http]
host = "127.0.0.1"
port = {DV_HTTP_PORT}

[tls]
cert_file = "{p.server_cert}"
key_file = "{p.server_key}"
ca_file = "{p.ca}"
ca_key_file = "{p.ca_key}"

[[peers]]
ae_title = "{SCU_AE}"
services = ["echo", "store", "find"]
""", encoding="utf-8")
    return cfg


def dv_init(folder: Path, p: Pki) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = dv_config(folder, p)
    out = subprocess.run([str(VENV_BIN / "dicomvault"), "init", "--config", str(cfg)],
                         capture_output=True, cwd=folder, check=False)
    if out.returncode != 0:
        raise RuntimeError("dicomvault init failed: " + out.stderr.decode(errors="replace")[-2000:])
    return cfg


def dv_count(cfg: Path) -> Callable[[], int]:
    def count() -> int:
        import sqlite3

        db = cfg.parent / "data" / "index.sqlite3"
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return int(conn.execute("SELECT count(*) FROM instances").fetchone()[0])

    return count


def start_dicomvault(folder: Path, p: Pki, *, audit: bool = True, cfg: Path | None = None,
                     single_process: bool = False) -> Server:
    """``dicomvault serve`` (or, for the audit-off run, the same CLI with a no-op audit append).

    ``single_process``: DIMSE in the serve process (``dimse.workers = 1``), where the
    audit-off monkeypatch applies; the paired audit runs use it on both sides.
    """
    cfg = cfg or dv_init(folder, p)
    env = dict(os.environ, DICOMVAULT_DIMSE__WORKERS="1") if single_process else None
    if audit:
        cmd = [str(VENV_BIN / "dicomvault"), "serve", "--config", str(cfg)]
    else:
        cmd = [sys.executable, str(HERE), "--serve-without-audit", str(cfg)]
    out, err = folder / "serve.out", folder / "serve.err"
    proc = subprocess.Popen(cmd, stdout=out.open("wb"), stderr=err.open("wb"), cwd=folder, env=env)
    try:
        wait_port(DV_PORT, proc)
        wait_ready(out, proc)
    except Exception:
        sys.stderr.write(err.read_text(errors="replace")[-3000:])
        stop_process(proc)
        raise
    return Server("dicomvault", proc, DV_PORT, DV_AE, dv_count(cfg), folder, [out, err])


def serve_without_audit(cfg: str) -> None:
    """Child mode: ``dicomvault serve`` with ``AuditTrail.append`` a no-op (bench-only)."""
    from dicomvault.audit.chain import AuditTrail
    from dicomvault.cli import app

    def no_append(self: Any, events: Any, session: Any = None) -> list[int]:
        return []

    AuditTrail.append = no_append  # type: ignore[method-assign]
    app(["serve", "--config", cfg])


ORTHANC_BIN = shutil.which("Orthanc") or "/usr/sbin/Orthanc"


def start_orthanc(folder: Path, p: Pki) -> Server:
    """Orthanc from Debian, own config, DICOM TLS with the bench CA, ``TCP_NODELAY=1``."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "bench",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "StorageCompression": False,
        "Plugins": [],
        "HttpServerEnabled": True,
        "HttpPort": ORTHANC_HTTP_PORT,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": ORTHANC_AE,
        "DicomPort": ORTHANC_PORT,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": True,
        "DicomCheckModalityHost": False,
        "DicomModalities": {"bench": [SCU_AE, "127.0.0.1", 104]},
        "DicomTlsEnabled": True,
        "DicomTlsCertificate": str(p.server_cert),
        "DicomTlsPrivateKey": str(p.server_key),
        "DicomTlsTrustedCertificates": str(p.ca),
        "DicomTlsRemoteCertificateRequired": True,
        "SaveJobs": False,
        "LimitFindResults": 0,
        "LimitFindInstances": 0,
    }
    cfg = folder / "orthanc.json"
    cfg.write_text(json.dumps(config, indent=1), encoding="utf-8")
    out, err = folder / "orthanc.out", folder / "orthanc.err"
    env = dict(os.environ, TCP_NODELAY="1")
    proc = subprocess.Popen([ORTHANC_BIN, str(cfg)], stdout=out.open("wb"), stderr=err.open("wb"),
                            cwd=folder, env=env)
    try:
        wait_port(ORTHANC_PORT, proc)
        wait_port(ORTHANC_HTTP_PORT, proc)
    except Exception:
        sys.stderr.write(err.read_text(errors="replace")[-3000:])
        stop_process(proc)
        raise

    def count() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{ORTHANC_HTTP_PORT}/statistics", timeout=30) as r:
            return int(json.load(r)["CountInstances"])

    return Server("orthanc", proc, ORTHANC_PORT, ORTHANC_AE, count, folder, [out, err])


def orthanc_version() -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{ORTHANC_HTTP_PORT}/system", timeout=30) as r:
        return str(json.load(r).get("Version", "?"))


#: DCMTK reads TCP_NODELAY from the environment: the sending modality disables Nagle too,
#: otherwise storescu's own small trailing writes wait for delayed ACKs (measured here:
#: Orthanc 60 -> 113 instances/s at 1 association) and the client, not the server, is timed.
STORESCU_ENV = dict(os.environ, TCP_NODELAY="1")


# -- C-STORE ------------------------------------------------------------------------------------------
def store(server: Server, p: Pki, files: list[Path], associations: int, total_bytes: int) -> dict[str, float]:
    """Send ``files`` with ``associations`` parallel storescu processes; rate and peak RSS."""
    chunks = [files[k::associations] for k in range(associations)]
    lists = []
    for k, chunk in enumerate(chunks):
        folder = server.folder / f"batch{k}"
        folder.mkdir(exist_ok=True)
        for f in chunk:
            (folder / f.name).symlink_to(f)
        lists.append(folder)
    # Both servers start from an idle disk: without this, the first run competed with the
    # write-back of the 1 GB the generator (or the previous run's clean-up) left dirty.
    os.sync()
    rss = RssSampler(server.proc.pid).start()
    before = server.count()
    start = time.perf_counter()
    procs = []
    for k, folder in enumerate(lists):
        cmd = ["storescu", "+tls", str(p.client_key), str(p.client_cert), "+cf", str(p.ca),
               "-aet", SCU_AE, "-aec", server.called_ae, "+sd", "-nh",
               "127.0.0.1", str(server.port), str(folder)]
        errf = server.folder / f"storescu{k}.err"
        procs.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf.open("wb"),
                                       env=STORESCU_ENV), errf))
    codes = [pr.wait() for pr, _ in procs]
    elapsed = time.perf_counter() - start
    peak = rss.stop()
    stored = server.count() - before
    if any(codes) or stored != len(files):
        detail = "".join(e.read_text(errors="replace")[-1500:] for _, e in procs)
        raise RuntimeError(f"{server.name}: storescu exit codes {codes}, {stored}/{len(files)} "
                           f"instances in the index\n{detail}")
    return {"instances_per_s": round(len(files) / elapsed, 1),
            "mb_per_s": round(total_bytes / elapsed / 1e6, 1),
            "seconds": round(elapsed, 2), "peak_rss_mb": peak}


def store_rounds(servers: list[Server], p: Pki, files: list[Path], associations: int,
                 rounds: int = ROUNDS) -> list[dict[str, float]]:
    """``store`` into each server in ``rounds`` slices of ``files``, the servers taking turns
    (order alternating), so a shared machine's drift in speed hits them alike; per server
    the rate over its own timed seconds and the peak RSS of its slices."""
    slices = [files[r::rounds] for r in range(rounds)] if len(servers) > 1 else [files]
    parts: list[list[dict[str, float]]] = [[] for _ in servers]
    for r, chunk in enumerate(slices):
        order = range(len(servers)) if r % 2 == 0 else reversed(range(len(servers)))
        for j in order:
            size = sum(f.stat().st_size for f in chunk)
            sub = Server(servers[j].name, servers[j].proc, servers[j].port, servers[j].called_ae,
                         servers[j].count, servers[j].folder / f"round{r}")
            sub.folder.mkdir(exist_ok=True)
            parts[j].append(store(sub, p, chunk, associations, size))
    out = []
    total_bytes = sum(f.stat().st_size for f in files)
    for runs in parts:
        seconds = sum(run["seconds"] for run in runs)
        out.append({"instances_per_s": round(len(files) / seconds, 1),
                    "mb_per_s": round(total_bytes / seconds / 1e6, 1),
                    "seconds": round(seconds, 2),
                    "peak_rss_mb": max(run["peak_rss_mb"] for run in runs)})
    return out


# -- C-FIND ---------------------------------------------------------------------------------------------
def _scu_nodelay() -> None:
    """TCP_NODELAY on the pynetdicom SCU's sockets (bench client only).

    pynetdicom writes a C-FIND-RQ as two P-DATA PDUs (command, identifier); with
    Nagle on, the second waits for the server's delayed ACK (~40 ms) and every
    query would measure the client's stall instead of the server.
    """
    import socket

    from pynetdicom.transport import AssociationSocket

    original = AssociationSocket._create_socket
    if getattr(original, "_dv_nodelay", False):
        return

    def create(self: Any, address: Any) -> socket.socket:
        sock = original(self, address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    create._dv_nodelay = True  # type: ignore[attr-defined]
    AssociationSocket._create_socket = create  # type: ignore[method-assign]


def find_latency(servers: list[Server], p: Pki, patients: int, queries: int,
                 seed: int = 7) -> list[dict[str, Any]]:
    """STUDY-level Study Root C-FIND, one TLS association per server: p50/p95 in ms per key kind.

    With several servers (ours and Orthanc, each holding the same instances) every
    query goes to each of them in turn, the order alternating, so that the drift of a
    shared machine's speed hits them alike; one result per server, in order.
    """
    from pydicom.dataset import Dataset
    from pynetdicom import AE

    _scu_nodelay()
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

    ae = AE(ae_title=SCU_AE)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    assocs = []
    for server in servers:
        assoc = ae.associate("127.0.0.1", server.port, ae_title=server.called_ae,
                             tls_args=(client_context(p), "localhost"))
        if not assoc.is_established:
            raise RuntimeError(f"{server.name}: C-FIND association not established")
        assocs.append(assoc)
    rng = random.Random(seed)
    results: list[dict[str, Any]] = [{} for _ in servers]

    def one(k: int, ds: Any) -> tuple[float, int]:
        t0 = time.perf_counter()
        n = 0
        for status, identifier in assocs[k].send_c_find(ds, StudyRootQueryRetrieveInformationModelFind):
            code = getattr(status, "Status", None)
            if code is None:
                raise RuntimeError(f"{servers[k].name}: C-FIND got no response")
            if code in (0xFF00, 0xFF01):
                n += identifier is not None
            elif code != 0x0000:
                raise RuntimeError(f"{servers[k].name}: C-FIND status 0x{code:04X}")
        return (time.perf_counter() - t0) * 1000, n

    try:
        for kind in ("patient_id", "patient_name_wildcard"):
            times: list[list[float]] = [[] for _ in servers]
            matches: list[list[int]] = [[] for _ in servers]
            for q in range(queries + 5):
                pt = rng.randrange(patients)
                ds = Dataset()
                ds.QueryRetrieveLevel = "STUDY"
                ds.PatientID = patient_id(pt) if kind == "patient_id" else ""
                ds.PatientName = name_wildcard(pt) if kind != "patient_id" else ""
                ds.StudyInstanceUID = ""
                ds.StudyDate = ""
                ds.AccessionNumber = ""
                ds.StudyDescription = ""
                ds.ModalitiesInStudy = ""
                ds.NumberOfStudyRelatedInstances = ""
                order = range(len(servers)) if q % 2 == 0 else reversed(range(len(servers)))
                for k in order:
                    elapsed, n = one(k, ds)
                    if q >= 5:  # the first few warm caches on both sides
                        times[k].append(elapsed)
                        matches[k].append(n)
            for k, server in enumerate(servers):
                if not any(matches[k]):
                    raise RuntimeError(f"{server.name}: C-FIND {kind} matched nothing")
                qs = statistics.quantiles(times[k], n=100, method="inclusive")
                results[k][kind] = {"p50_ms": round(qs[49], 2), "p95_ms": round(qs[94], 2),
                                    "mean_matches": round(sum(matches[k]) / len(matches[k]), 1)}
    finally:
        for assoc in assocs:
            assoc.release()
    return results


# -- seeding the large index ----------------------------------------------------------------------
def seed_index(cfg_path: str, instances: int) -> None:
    """Child mode (``--seed``): fill a dicomvault index with ``instances`` instances (see module doc)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import dcmwrite
    from sqlalchemy import event, insert, update

    os.fsync = lambda fd: None  # seeding only: not measured, durability irrelevant
    from dicomvault.access.principal import Principal
    from dicomvault.config import load_settings
    from dicomvault.index.migrate import upgrade
    from dicomvault.index.models import Instance, Series, Study
    from dicomvault.services.context import build_services

    settings = load_settings(Path(cfg_path), {})
    svc = build_services(settings)

    @event.listens_for(svc.engine, "connect")
    def _fast(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA synchronous=OFF")

    upgrade(svc.engine)
    principal = Principal(id="ae:SEEDER", kind="ae", name="SEEDER", roles=frozenset({"service"}),
                          address="127.0.0.1", door="dimse", mfa_verified=False)
    per_series = INSTANCES_PER_STUDY // SERIES_PER_STUDY
    run = "77"
    rows: list[dict[str, Any]] = []

    def flush() -> None:
        if rows:
            with svc.session_factory() as s, s.begin():
                s.execute(insert(Instance), rows)
            rows.clear()

    for s_no in range(instances // INSTANCES_PER_STUDY):
        for k in range(SERIES_PER_STUDY):
            buf = DicomBytesIO()
            dcmwrite(buf, ct_dataset(run, s_no, k, 0, None), enforce_file_format=True)
            svc.archive.ingest(principal, buf.getvalue(), door="dimse")
            with svc.session_factory() as s, s.begin():
                series_row = s.query(Series).filter_by(series_uid=series_uid(run, s_no, k)).one()
                s.execute(update(Series).where(Series.id == series_row.id)
                          .values(num_instances=Series.num_instances + per_series - 1))
                s.execute(update(Study).where(Study.id == series_row.study_id)
                          .values(num_instances=Study.num_instances + per_series - 1))
                sid = series_row.id
            for i in range(1, per_series):
                uid = sop_uid(run, s_no, k, i)
                rows.append({"series_id": sid, "sop_uid": uid, "sop_class_uid": CT_IMAGE_STORAGE,
                             "instance_number": i + 1, "number_of_frames": 1, "rows": 512,
                             "columns": 512, "transfer_syntax_uid": "1.2.840.10008.1.2.1",
                             "blob_key": f"seed/{uid}.dvb", "size": 525_000,
                             "blob_sha256": "0" * 64, "content_mac": "0" * 64})
        if len(rows) >= 5000:
            flush()
    flush()
    svc.close()


# -- orchestration -----------------------------------------------------------------------------------------
def ratio(ours: float, theirs: float) -> float | None:
    return round(ours / theirs, 3) if theirs else None


@contextmanager
def running(start: Callable[[], Server]) -> Iterator[Server]:
    server = start()
    try:
        yield server
    finally:
        stop_process(server.proc)


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    n = 200 if args.quick else args.instances
    queries = 40 if args.quick else args.queries
    big = 10_000 if args.quick else args.index_instances
    work = Path(tempfile.mkdtemp(prefix="dvbench-", dir=args.workdir))
    result: dict[str, Any] = {"bench": "dimse", "instances": n, "find_queries": queries,
                              "quick": bool(args.quick), "cpus": os.cpu_count(),
                              "load_avg_at_start": round(os.getloadavg()[0], 2),
                              "storescu_tcp_nodelay": True}
    try:
        p = make_pki(work / "pki")
        t0 = time.perf_counter()
        total_bytes = generate_ct(work / "ct", n, "55")
        files = sorted((work / "ct").glob("*.dcm"))
        patients = max(1, n // INSTANCES_PER_STUDY // STUDIES_PER_PATIENT)
        result["instance_mb"] = round(total_bytes / n / 1e6, 3)
        log(f"generated {n} CT files ({total_bytes / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f}s")

        ours: dict[str, Any] = {}
        theirs: dict[str, Any] = {}
        for assocs in (1, 4):
            with running(partial(start_dicomvault, work / f"dv{assocs}", p)) as srv:
                if args.orthanc:
                    # Both run at once and take turns over slices of the files; after the
                    # 4-association runs both hold the same instances and answer the C-FIND
                    # queries in turn.
                    with running(partial(start_orthanc, work / f"orthanc{assocs}", p)) as other:
                        result["orthanc_version"] = orthanc_version()
                        ours[f"store_{assocs}"], theirs[f"store_{assocs}"] = store_rounds(
                            [srv, other], p, files, assocs)
                        log(f"{assocs} assoc: dicomvault {ours[f'store_{assocs}']}; "
                            f"orthanc {theirs[f'store_{assocs}']}")
                        if assocs == 4:
                            ours["find"], theirs["find"] = find_latency([srv, other], p, patients, queries)
                            log(f"C-FIND (paired) dicomvault: {ours['find']}; orthanc: {theirs['find']}")
                    if not args.keep:
                        shutil.rmtree(work / f"orthanc{assocs}", ignore_errors=True)
                else:
                    ours[f"store_{assocs}"], = store_rounds([srv], p, files, assocs)
                    log(f"dicomvault {assocs} assoc: {ours[f'store_{assocs}']}")
                    if assocs == 4:
                        ours["find"], = find_latency([srv], p, patients, queries)
                        log(f"dicomvault C-FIND: {ours['find']}")
            if not args.keep:
                shutil.rmtree(work / f"dv{assocs}", ignore_errors=True)
        # Audit overhead: paired runs (on, off, on, off) back to back on the first half of
        # the files, so that the load of a shared machine affects both sides alike.
        half = files[: max(1, len(files) // 2)]
        half_bytes = sum(f.stat().st_size for f in half)
        paired: dict[bool, list[float]] = {True: [], False: []}
        for rnd in range(2):
            for audit in (True, False):
                folder = work / f"dv_audit_{audit}_{rnd}"
                with running(partial(start_dicomvault, folder, p, audit=audit, single_process=True)) as srv:
                    rate = store(srv, p, half, 1, half_bytes)["instances_per_s"]
                    paired[audit].append(rate)
                if not args.keep:
                    shutil.rmtree(folder, ignore_errors=True)
        log(f"dicomvault 1 assoc, audit on {paired[True]} / append no-op {paired[False]} inst/s")
        no_audit = {"instances_per_s": round(statistics.mean(paired[False]), 1)}
        audit_on = round(statistics.mean(paired[True]), 1)

        # C-FIND on a large index
        t0 = time.perf_counter()
        cfg = dv_init(work / "dv_big", p)
        subprocess.run([sys.executable, str(HERE), "--seed", str(cfg), str(big)], check=True)
        log(f"seeded {big} instances in {time.perf_counter() - t0:.1f}s")
        with running(partial(start_dicomvault, work / "dv_big", p, cfg=cfg)) as srv:
            indexed = srv.count()
            big_find, = find_latency([srv], p, big // INSTANCES_PER_STUDY // STUDIES_PER_PATIENT, queries)
            log(f"dicomvault C-FIND at {indexed} instances: {big_find}")

        for a in (1, 4):
            o = ours[f"store_{a}"]
            result[f"dv_store_{a}assoc_inst_per_s"] = o["instances_per_s"]
            result[f"dv_store_{a}assoc_mb_per_s"] = o["mb_per_s"]
            result[f"dv_store_{a}assoc_peak_rss_mb"] = o["peak_rss_mb"]
        for kind in ("patient_id", "patient_name_wildcard"):
            for q in ("p50_ms", "p95_ms"):
                result[f"dv_find_{kind}_{q}"] = ours["find"][kind][q]
        result["dv_index_instances"] = indexed
        for kind in ("patient_id", "patient_name_wildcard"):
            for q in ("p50_ms", "p95_ms"):
                result[f"dv_find_big_{kind}_{q}"] = big_find[kind][q]
        result["dv_store_1assoc_audit_on_paired_inst_per_s"] = audit_on
        result["dv_store_1assoc_audit_noop_paired_inst_per_s"] = no_audit["instances_per_s"]
        result["cstore_audit_overhead_ratio"] = ratio(audit_on, no_audit["instances_per_s"])
        if theirs:
            for a in (1, 4):
                t = theirs[f"store_{a}"]
                result[f"orthanc_store_{a}assoc_inst_per_s"] = t["instances_per_s"]
                result[f"orthanc_store_{a}assoc_mb_per_s"] = t["mb_per_s"]
                result[f"orthanc_store_{a}assoc_peak_rss_mb"] = t["peak_rss_mb"]
                result[f"ratio_store_{a}assoc"] = ratio(ours[f"store_{a}"]["instances_per_s"],
                                                        t["instances_per_s"])
                result[f"ratio_peak_rss_{a}assoc"] = ratio(ours[f"store_{a}"]["peak_rss_mb"],
                                                           t["peak_rss_mb"])
            for kind in ("patient_id", "patient_name_wildcard"):
                for q in ("p50_ms", "p95_ms"):
                    result[f"orthanc_find_{kind}_{q}"] = theirs["find"][kind][q]
                    result[f"ratio_find_{kind}_{q}"] = ratio(ours["find"][kind][q], theirs["find"][kind][q])
        return result
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work}")


def reexec_in_netns() -> int:
    """Run this script again in a private network namespace (root: ``unshare -n``)."""
    if os.geteuid() != 0:
        raise SystemExit("bench_dimse.py needs root (unshare -n) for a private network namespace")
    env = dict(os.environ, **{NETNS_MARK: "1"})
    return subprocess.call(["unshare", "-n", "--", sys.executable, str(HERE), *sys.argv[1:]], env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: small N")
    parser.add_argument("--no-orthanc", dest="orthanc", action="store_false")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--index-instances", type=int, default=100_000)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--seed", nargs=2, metavar=("CONFIG", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--serve-without-audit", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed:
        seed_index(args.seed[0], int(args.seed[1]))
        return
    if args.serve_without_audit:
        serve_without_audit(args.serve_without_audit)
        return
    if os.environ.get(NETNS_MARK) != "1":
        raise SystemExit(reexec_in_netns())
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    result = run_benchmark(args)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
