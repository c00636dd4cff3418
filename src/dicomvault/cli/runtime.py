"""``dicomvault serve``: start the listeners, run until SIGTERM/SIGINT, stop cleanly.

An entry point (it wires the doors, ``dimse`` and ``web``, to the services), so it
lives with the CLI: services never import a door.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Mapping
from typing import Any

from dicomvault.audit import events as ev
from dicomvault.config import Settings
from dicomvault.errors import ConfigurationError
from dicomvault.services.context import Services, build_services


def _activity(services: Services, start: bool, detail: str = "") -> None:
    """Application Activity (110100) with Application Start/Stop (PS3.15 A.5.3.1)."""
    services.audit.append([ev.AuditEvent(
        event_id=ev.EventId.APPLICATION_ACTIVITY, action=ev.Action.EXECUTE, outcome=ev.Outcome.SUCCESS,
        outcome_description=detail,
        participants=[ev.ActiveParticipant(user_id="dicomvault", is_requestor=False,
                                           role=ev.RoleId.APPLICATION)],
        event_types=[ev.EventType.APPLICATION_START if start else ev.EventType.APPLICATION_STOP],
        door="job")])


def _weakened(services: Services) -> None:
    weak = services.settings.weakened_security()
    if weak:
        services.audit.append([ev.AuditEvent(
            event_id=ev.EventId.SECURITY_ALERT, action=ev.Action.EXECUTE, outcome=ev.Outcome.MINOR_FAILURE,
            outcome_description="security defaults weakened by configuration: " + ", ".join(weak),
            participants=[ev.ActiveParticipant(user_id="dicomvault", is_requestor=False,
                                               role=ev.RoleId.APPLICATION)],
            event_types=[ev.EventType.SECURITY_CONFIGURATION], door="job",
            context={"weakened": weak})])


def run_server(settings: Settings, environ: Mapping[str, str], *,
               log: Callable[[str], Any] = print, stop_event: threading.Event | None = None) -> None:
    """Serve until a signal (or ``stop_event``) arrives; audit start and stop."""
    if not (settings.keys_dir / "root.json").exists():
        raise ConfigurationError(f"{settings.data_dir} is not initialised: run 'dicomvault init'")
    services = build_services(settings, environ=environ)
    from dicomvault.index.migrate import upgrade

    upgrade(services.engine)
    swept = services.archive.sweep_orphan_blobs()
    stop = stop_event or threading.Event()
    if stop_event is None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())

    from dicomvault.dimse.server import DimseServer

    dimse = DimseServer(services) if settings.dimse.workers <= 1 else None
    workers = None
    web = None
    try:
        services.audit_runtime.start()
        _activity(services, True, f"orphan blobs removed at start: {swept}")
        _weakened(services)
        if dimse is not None:
            dimse.start()
            log(f"DIMSE (TLS) listening on {settings.dimse.host}:{dimse.port} as {settings.dimse.ae_title}")
        else:
            from dicomvault.cli.dimse_workers import Workers, listening_sockets

            sockets = listening_sockets(settings)
            try:
                workers = Workers(settings, environ, sockets)
                workers.wait_ready()
            finally:
                for sock in sockets.values():
                    sock.close()  # the workers hold their own descriptors
            log(f"DIMSE (TLS) listening on {settings.dimse.host}:{settings.dimse.port} as "
                f"{settings.dimse.ae_title} in {settings.dimse.workers} worker processes "
                f"(pids {', '.join(map(str, workers.pids))})")
            from dicomvault.services.offload import IngestChannel, OffloadedIngest

            services.ingest_offload = OffloadedIngest(
                [IngestChannel(sock) for sock in workers.ingest_sockets], services.archive.ingest,
                on_stored=services.metrics.instance_stored)
        from dicomvault.web.server import WebServer

        web = WebServer(services)
        web.start()
        log(f"HTTPS listening on https://{settings.http.host}:{web.port}/")
        log("ready")
        stop.wait()
    finally:
        log("stopping")
        if web is not None:
            web.stop()
        if dimse is not None:
            dimse.stop()
        if workers is not None:
            workers.stop()
        if services.ingest_offload is not None:
            services.ingest_offload.close()
            services.ingest_offload = None
        _activity(services, False)
        services.audit_runtime.stop()  # anchors the head with a signed checkpoint
        services.close()
        log("stopped")
