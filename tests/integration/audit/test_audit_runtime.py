"""``AuditRuntime``: settings → alerts + webhook + syslog forwarder + checkpoints, end to end."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from audit_factories import login_event
from rsyslog_harness import Rsyslog, free_port, make_pki

from dicomvault.audit.chain import AuditTrail
from dicomvault.audit.checkpoint import load_exported
from dicomvault.audit.metrics import Metrics
from dicomvault.audit.runtime import AuditRuntime
from dicomvault.config import AuditSettings, Settings, TlsSettings

pytestmark = pytest.mark.integration


def test_runtime_alerts_reach_webhook_and_syslog_and_stop_anchors(
    factory, keyring, deks, tmp_path: Path
) -> None:
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    pki = make_pki(tmp_path / "pki")
    collector = Rsyslog(tmp_path / "rsyslog", free_port(), pki)
    collector.start()
    settings = Settings(
        data_dir=tmp_path / "data",
        tls=TlsSettings(cert_file=str(pki["client_cert"]), key_file=str(pki["client_key"]),
                        ca_file=str(pki["ca"])),
        audit=AuditSettings(
            checkpoint_interval_seconds=3600, checkpoint_export_dir=str(tmp_path / "worm"),
            syslog_host="127.0.0.1", syslog_port=collector.port,
            webhook_url=f"http://127.0.0.1:{server.server_address[1]}/hook",
            failed_login_threshold=3, failed_login_window_seconds=300),
    )
    trail = AuditTrail(factory, keyring, deks, node_id="rt-node")
    metrics = Metrics()
    runtime = AuditRuntime(trail, settings, metrics=metrics)
    runtime.start()
    try:
        t0 = datetime.now(UTC)
        for i in range(3):
            trail.append([dataclasses.replace(login_event(False, user="mallory", address="10.6.6.6"),
                                              time=t0 + timedelta(seconds=i))])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and runtime.forwarder.pending():
            time.sleep(0.1)
        assert runtime.forwarder.pending() == 0
    finally:
        runtime.stop()
        collector.stop()
        server.shutdown()
    assert sorted(n["rule"] for n in received) == ["brute_force_account", "brute_force_address"]
    head, _ = trail.head()
    seqs = {int(m.group(1)) for line in collector.lines()
            if (m := re.search(r'sequenceId="(\d+)"', line[1]))}
    assert seqs == set(range(1, head + 1))  # failed logins and both Security Alerts
    assert max(cp.seq for cp in load_exported(tmp_path / "worm")) == head  # shutdown anchor
    assert b"dicomvault_audit_syslog_queue_depth 0.0" in metrics.render()[0]
