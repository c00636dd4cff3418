"""DICOMweb benchmark: dicomvault against Orthanc 1.10 + its DICOMweb plugin, same run (issue 3).

Prints ONE JSON line.  Ours runs as ``dicomvault serve`` (HTTPS, TLS 1.2+/BCP195,
bearer personal API token on every request, blobs and PHI encrypted, audit on);
Orthanc runs from Debian (``orthanc`` + ``orthanc-dicomweb``) over plain HTTP
without authentication, as its packaged defaults allow — so the comparison is
conservative for us.  Both in a private network namespace (``unshare -n``,
``lo`` up), the same client code for both:

* STOW-RS: the Python ``dicomweb-client`` stores N synthetic 512x512 16-bit CT
  instances (default 2,000, ~0.5 MB each) in batches of 50: instances/s;
* QIDO-RS p50/p95 (STUDY level, ``limit=101`` as OHIF sends) by PatientID, by
  StudyDate range and by PatientName prefix wildcard, on that set and (ours) on
  an index of 100,000 instances seeded like ``bench_dimse.py --seed``;
* WADO-RS: whole-study retrieve (``transfer-syntax=*``) in MB/s, single-instance
  retrieve p50/p95, study and series metadata p50/p95.

Queries and retrieves go through one keep-alive ``requests`` session per server
(TLS resumed for ours); the first few requests of each kind warm caches and are
not counted.  STOW runs into one server at a time; then both servers run at once
and every query and retrieve goes to each in turn, the same request for both and
the order alternating, so that a shared machine's drift in speed hits both alike.

Usage: ``python bench/bench_dicomweb.py [--quick] [--no-orthanc] [--keep]``
(root for ``unshare -n``).  Reuses the data generator, PKI and server
helpers of ``bench_dimse.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))

import bench_dimse as base  # noqa: E402 - the shared bench helpers live beside this file

NETNS_MARK = "DICOMVAULT_BENCH_DICOMWEB_NETNS"
BATCH = 50
WARMUP = 5
ORTHANC_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
ANY_TS = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def log(msg: str) -> None:
    base.log(msg)


# -- servers -------------------------------------------------------------------------------------
def dv_token(cfg: Path) -> str:
    """A technologist account and a personal API token (as ``dicomvault user token-create`` makes)."""
    from dicomvault.access.principal import system_principal
    from dicomvault.access.tokens import permissions_of
    from dicomvault.config import load_settings
    from dicomvault.index.migrate import upgrade
    from dicomvault.services.context import build_services

    services = build_services(load_settings(cfg, {}))
    try:
        upgrade(services.engine)
        operator = system_principal("bench")
        created = services.identity.create_user(operator, f"bench{int(time.time() * 1000) % 10**9}",
                                                {"technologist"})
        issued = services.identity.create_api_token(operator, created.user_id, "bench",
                                                    permissions_of({"technologist"}), 1)
        return issued.token
    finally:
        services.close()


class Target:
    """One DICOMweb origin plus the session the bench uses for it."""

    def __init__(self, name: str, root: str, session: Any) -> None:
        self.name = name
        self.root = root.rstrip("/")
        self.session = session

    def client(self) -> Any:
        from dicomweb_client.api import DICOMwebClient

        return DICOMwebClient(self.root, session=self.session, timeout=600)


def dv_target(cfg: Path, pki: base.Pki) -> Target:
    import requests

    s = requests.Session()
    s.trust_env = False
    s.verify = str(pki.ca)
    s.headers["Authorization"] = f"Bearer {dv_token(cfg)}"
    return Target("dicomvault", f"https://localhost:{base.DV_HTTP_PORT}/dicomweb", s)


def start_dv(folder: Path, pki: base.Pki, cfg: Path | None = None) -> tuple[base.Server, Target]:
    cfg = cfg or base.dv_init(folder, pki)
    target = dv_target(cfg, pki)  # before serve: the account is created offline, as an operator would
    server = base.start_dicomvault(folder, pki, cfg=cfg)
    base.wait_port(base.DV_HTTP_PORT, server.proc)
    return server, target


def start_orthanc(folder: Path, pki: base.Pki) -> tuple[base.Server, Target]:
    """Orthanc from Debian with the DICOMweb plugin, HTTP on loopback, no authentication."""
    import requests

    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "bench", "StorageDirectory": str(folder / "storage"), "IndexDirectory": str(folder / "index"),
        "StorageCompression": False, "Plugins": [ORTHANC_PLUGIN], "HttpServerEnabled": True,
        "HttpPort": base.ORTHANC_HTTP_PORT, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomServerEnabled": False, "SaveJobs": False, "LimitFindResults": 0, "LimitFindInstances": 0,
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True,
                     "StudiesMetadata": "Full", "SeriesMetadata": "Full"},
    }
    cfg = folder / "orthanc.json"
    cfg.write_text(json.dumps(config, indent=1), encoding="utf-8")
    out, err = folder / "orthanc.out", folder / "orthanc.err"
    proc = subprocess.Popen([base.ORTHANC_BIN, str(cfg)], stdout=out.open("wb"), stderr=err.open("wb"),
                            cwd=folder, env=dict(os.environ, TCP_NODELAY="1"))
    try:
        base.wait_port(base.ORTHANC_HTTP_PORT, proc)
    except Exception:
        sys.stderr.write(err.read_text(errors="replace")[-3000:])
        base.stop_process(proc)
        raise
    server = base.Server("orthanc", proc, base.ORTHANC_HTTP_PORT, "", lambda: 0, folder, [out, err])
    s = requests.Session()
    s.trust_env = False
    return server, Target("orthanc", f"http://127.0.0.1:{base.ORTHANC_HTTP_PORT}/dicom-web", s)


# -- measurements ----------------------------------------------------------------------------------
def quantiles(times: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(times, n=100, method="inclusive")
    return {"p50_ms": round(qs[49], 2), "p95_ms": round(qs[94], 2)}


def timed(fns: list[Callable[[], Any]], count: int) -> list[list[float]]:
    """Call each of ``fns`` (one per server) ``count`` times after WARMUP, in turn, the order
    alternating, so a shared machine's drift in speed hits every server alike; ms per call."""
    out: list[list[float]] = [[] for _ in fns]
    for k in range(count + WARMUP):
        order = range(len(fns)) if k % 2 == 0 else reversed(range(len(fns)))
        for j in order:
            t0 = time.perf_counter()
            fns[j]()
            if k >= WARMUP:
                out[j].append((time.perf_counter() - t0) * 1000)
    return out


def stow(target: Target, files: list[Path]) -> dict[str, float]:
    """dicomweb-client ``store_instances`` in batches of 50 (read from disk inside the timing)."""
    import pydicom

    client = target.client()
    os.sync()  # an idle disk for both servers (see ``bench_dimse.store``)
    start = time.perf_counter()
    stored = 0
    for i in range(0, len(files), BATCH):
        datasets = [pydicom.dcmread(f) for f in files[i:i + BATCH]]
        result = client.store_instances(datasets)
        stored += len(result.get("ReferencedSOPSequence", []))
        if result.get("FailedSOPSequence"):  # Orthanc sends it empty on success
            raise RuntimeError(f"{target.name}: STOW failures in batch {i // BATCH}")
    elapsed = time.perf_counter() - start
    if stored != len(files):
        raise RuntimeError(f"{target.name}: {stored}/{len(files)} instances acknowledged")
    return {"instances_per_s": round(len(files) / elapsed, 1), "seconds": round(elapsed, 2)}


def _qido(target: Target, params: dict[str, str]) -> int:
    # "*" and "^" are sent literally (as OHIF does): Orthanc's plugin does not percent-decode them.
    query = "&".join(f"{k}={quote(v, safe='*^-')}" for k, v in {**params, "limit": "101"}.items())
    r = target.session.get(f"{target.root}/studies?{query}", headers={"Accept": "application/dicom+json"},
                           timeout=120)
    r.raise_for_status()
    return len(r.json()) if r.content else 0


def qido(targets: list[Target], patients: int, studies: int, queries: int,
         seed: int = 11) -> list[dict[str, Any]]:
    """QIDO-RS p50/p95 per kind; with several targets each query goes to all in turn."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = [{} for _ in targets]
    kinds: dict[str, Callable[[], dict[str, str]]] = {
        "patient_id": lambda: {"PatientID": base.patient_id(rng.randrange(patients))},
        "date_range": lambda: _date_range(rng, studies),
        "name_wildcard": lambda: {"PatientName": base.name_wildcard(rng.randrange(patients)).upper()},
    }
    for kind, make in kinds.items():
        matches: list[list[int]] = [[] for _ in targets]
        draws = [make() for _ in range(queries + WARMUP)]  # the same queries for every server
        asked = [0] * len(targets)

        def ask(j: int) -> None:
            matches[j].append(_qido(targets[j], draws[asked[j]]))
            asked[j] += 1

        times = timed([partial(ask, j) for j in range(len(targets))], queries)
        for j, target in enumerate(targets):
            if not any(matches[j]):
                raise RuntimeError(f"{target.name}: QIDO {kind} matched nothing")
            out[j][kind] = {**quantiles(times[j]),
                            "mean_matches": round(sum(matches[j]) / len(matches[j]), 1)}
    return out


def _date_range(rng: random.Random, studies: int) -> dict[str, str]:
    """A 5-day window inside the dates the generator uses (2024-MM-DD, see ``ct_dataset``)."""
    s = rng.randrange(studies)
    month, day = 1 + s % 12, 1 + s % 28
    return {"StudyDate": f"2024{month:02d}{max(1, day - 2):02d}-2024{month:02d}{min(28, day + 2):02d}"}


def retrieve(targets: list[Target], run: str, studies: int, n: int,
             queries: int) -> list[dict[str, Any]]:
    """Study retrieve MB/s; single-instance, study-metadata and series-metadata p50/p95.

    With several targets every study, instance and metadata request goes to each in
    turn (order alternating), the same request for all.
    """
    rng = random.Random(5)
    totals = [0] * len(targets)
    seconds = [0.0] * len(targets)
    for s in range(studies):
        order = range(len(targets)) if s % 2 == 0 else reversed(range(len(targets)))
        for j in order:
            target = targets[j]
            start = time.perf_counter()
            with target.session.get(f"{target.root}/studies/{base.study_uid(run, s)}",
                                    headers={"Accept": ANY_TS}, stream=True, timeout=600) as r:
                r.raise_for_status()
                for chunk in r.iter_content(1 << 20):
                    totals[j] += len(chunk)
            seconds[j] += time.perf_counter() - start
    for j, target in enumerate(targets):
        if totals[j] < n * 500_000:
            raise RuntimeError(f"{target.name}: study retrieve returned only {totals[j]} bytes")
    grid = base.layout(n)

    def instance_urls() -> list[str]:
        picks = [grid[rng.randrange(n)] for _ in range(queries + WARMUP)]
        return [f"/studies/{base.study_uid(run, s)}/series/{base.series_uid(run, s, k)}"
                f"/instances/{base.sop_uid(run, s, k, i)}" for s, k, i in picks]

    def metadata_urls(series: bool, count: int) -> list[str]:
        urls = []
        for _ in range(count + WARMUP):
            s = rng.randrange(studies)
            url = f"/studies/{base.study_uid(run, s)}"
            if series:
                url += f"/series/{base.series_uid(run, s, rng.randrange(base.SERIES_PER_STUDY))}"
            urls.append(url + "/metadata")
        return urls

    def get_all(urls: list[str], accept: str, check: Callable[[Any, Target], None],
                count: int) -> list[list[float]]:
        asked = [0] * len(targets)

        def one(j: int) -> None:
            target = targets[j]
            r = target.session.get(target.root + urls[asked[j]], headers={"Accept": accept},
                                   timeout=300)
            asked[j] += 1
            r.raise_for_status()
            check(r, target)

        return timed([partial(one, j) for j in range(len(targets))], count)

    def whole_instance(r: Any, target: Target) -> None:
        if len(r.content) < 500_000:
            raise RuntimeError(f"{target.name}: short instance response")

    def some_metadata(r: Any, target: Target) -> None:
        if not r.json():
            raise RuntimeError(f"{target.name}: empty metadata")

    meta_count = max(10, queries // 4)
    instance = get_all(instance_urls(), ANY_TS, whole_instance, queries)
    study_meta = get_all(metadata_urls(False, meta_count), "application/dicom+json", some_metadata,
                         meta_count)
    series_meta = get_all(metadata_urls(True, meta_count), "application/dicom+json", some_metadata,
                          meta_count)
    return [{"study_retrieve_mb_per_s": round(totals[j] / seconds[j] / 1e6, 1),
             "study_retrieve_bytes": totals[j],
             "instance": quantiles(instance[j]),
             "study_metadata": quantiles(study_meta[j]),
             "series_metadata": quantiles(series_meta[j])} for j in range(len(targets))]


def measure(starts: list[Callable[[], tuple[base.Server, Target]]], files: list[Path], run: str,
            n: int, queries: int) -> list[dict[str, Any]]:
    """STOW into each server in turn (the others idle), then queries and retrieves paired."""
    servers: list[base.Server] = []
    targets: list[Target] = []
    outs: list[dict[str, Any]] = []
    try:
        studies = max(1, n // base.INSTANCES_PER_STUDY)
        patients = max(1, studies // base.STUDIES_PER_PATIENT)
        for start in starts:
            server, target = start()
            servers.append(server)
            targets.append(target)
            outs.append({"stow": stow(target, files)})
            log(f"{target.name} STOW: {outs[-1]['stow']}")
        for out, found in zip(outs, qido(targets, patients, studies, queries), strict=True):
            out["qido"] = found
        for out, got in zip(outs, retrieve(targets, run, studies, n, queries), strict=True):
            out.update(got)
        for out, target in zip(outs, targets, strict=True):
            log(f"{target.name} QIDO: {out['qido']}")
            log(f"{target.name} WADO: { {k: v for k, v in out.items() if k not in ('stow', 'qido')} }")
        return outs
    finally:
        for server in servers:
            base.stop_process(server.proc)


def flatten(prefix: str, res: dict[str, Any]) -> dict[str, Any]:
    out = {f"{prefix}_stow_inst_per_s": res["stow"]["instances_per_s"],
           f"{prefix}_study_retrieve_mb_per_s": res["study_retrieve_mb_per_s"]}
    for kind, qs in res["qido"].items():
        out[f"{prefix}_qido_{kind}_p50_ms"] = qs["p50_ms"]
        out[f"{prefix}_qido_{kind}_p95_ms"] = qs["p95_ms"]
    for what in ("instance", "study_metadata", "series_metadata"):
        out[f"{prefix}_{what}_p50_ms"] = res[what]["p50_ms"]
        out[f"{prefix}_{what}_p95_ms"] = res[what]["p95_ms"]
    return out


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    n = 200 if args.quick else args.instances
    queries = 40 if args.quick else args.queries
    big = min(10_000, args.index_instances) if args.quick else args.index_instances
    work = Path(tempfile.mkdtemp(prefix="dvbench-web-", dir=args.workdir))
    result: dict[str, Any] = {"bench": "dicomweb", "instances": n, "queries": queries,
                              "quick": bool(args.quick),
                              "cpus": os.cpu_count(), "load_avg_at_start": round(os.getloadavg()[0], 2),
                              "ours": "https+bearer-token+encrypted", "orthanc": "http, no auth"}
    run = "55"
    try:
        pki = base.make_pki(work / "pki")
        t0 = time.perf_counter()
        total_bytes = base.generate_ct(work / "ct", n, run)
        files = sorted((work / "ct").glob("*.dcm"))
        result["instance_mb"] = round(total_bytes / n / 1e6, 3)
        log(f"generated {n} CT files ({total_bytes / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f}s")

        starts = [partial(start_dv, work / "dv", pki)]
        if args.orthanc:
            starts.append(partial(start_orthanc, work / "orthanc", pki))
        outs = measure(starts, files, run, n, queries)
        result.update(flatten("dv", outs[0]))
        if args.orthanc:
            result["orthanc_version"] = "1.10 (Debian orthanc + orthanc-dicomweb)"
            result.update(flatten("orthanc", outs[1]))
            for key in list(result):
                if key.startswith("dv_"):
                    other = "orthanc_" + key[3:]
                    if other in result and isinstance(result[other], int | float) and result[other]:
                        result["ratio_" + key[3:]] = round(result[key] / result[other], 3)
        if not args.keep:
            shutil.rmtree(work / "dv", ignore_errors=True)
            shutil.rmtree(work / "orthanc", ignore_errors=True)

        if big <= 0:
            return result
        t0 = time.perf_counter()
        cfg = base.dv_init(work / "dv_big", pki)
        subprocess.run([sys.executable, str(base.HERE), "--seed", str(cfg), str(big)], check=True)
        log(f"seeded {big} instances in {time.perf_counter() - t0:.1f}s")
        server, target = start_dv(work / "dv_big", pki, cfg)
        try:
            result["dv_index_instances"] = server.count()
            big_studies = big // base.INSTANCES_PER_STUDY
            big_qido, = qido([target], big_studies // base.STUDIES_PER_PATIENT, big_studies, queries)
            log(f"dicomvault QIDO at {result['dv_index_instances']} instances: {big_qido}")
        finally:
            base.stop_process(server.proc)
        for kind, qs in big_qido.items():
            result[f"dv_big_qido_{kind}_p50_ms"] = qs["p50_ms"]
            result[f"dv_big_qido_{kind}_p95_ms"] = qs["p95_ms"]
        return result
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: small N")
    parser.add_argument("--no-orthanc", dest="orthanc", action="store_false")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--index-instances", type=int, default=100_000)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    if os.environ.get(NETNS_MARK) != "1":
        if os.geteuid() != 0:
            raise SystemExit("bench_dicomweb.py needs root (unshare -n) for a private network namespace")
        env = dict(os.environ, **{NETNS_MARK: "1", base.NETNS_MARK: "1"})
        raise SystemExit(subprocess.call(["unshare", "-n", "--", sys.executable, str(HERE), *sys.argv[1:]],
                                         env=env))
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    result = run_benchmark(args)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
