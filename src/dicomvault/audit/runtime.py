"""The audit trail's background parts for ``dicomvault serve``, wired from settings.

``AuditRuntime(trail, settings)`` turns on, according to ``[audit]``: the
alert rules (webhook notifier when ``webhook_url`` is set), the syslog outbox
and TLS forwarder (when ``syslog_host`` is set; client certificate = the
server's own, CA = ``syslog_ca_file`` or the local CA), and periodic signed
checkpoints exported to ``checkpoint_export_dir``.  ``stop()`` drains what it
can, then emits the final checkpoint (shutdown anchoring).
"""

from __future__ import annotations

from dicomvault.audit.alerts import AlertEngine, Notifier, WebhookNotifier, install
from dicomvault.audit.chain import AuditTrail
from dicomvault.audit.checkpoint import CheckpointScheduler, CheckpointService
from dicomvault.audit.export.syslog import SyslogForwarder, client_context
from dicomvault.audit.metrics import Metrics
from dicomvault.config import Settings


class AuditRuntime:
    """Alert engine + syslog forwarder + checkpoint scheduler for one process."""

    def __init__(self, trail: AuditTrail, settings: Settings, *,
                 metrics: Metrics | None = None) -> None:
        cfg = settings.audit
        self.trail = trail
        trail.metrics = trail.metrics or metrics
        trail.checkpoint_export_dir = cfg.checkpoint_export_dir or trail.checkpoint_export_dir
        self.webhook = WebhookNotifier(cfg.webhook_url) if cfg.webhook_url else None
        notifiers: list[Notifier] = [self.webhook] if self.webhook else []
        self.alerts = install(trail, AlertEngine(
            cfg, trail.keyring, node_id=trail.node_id, peers=settings.peers, notifiers=notifiers,
            metrics=trail.metrics))
        self.forwarder: SyslogForwarder | None = None
        if cfg.syslog_host:
            trail.syslog_outbox = True
            ctx = client_context(cfg.syslog_ca_file or str(settings.tls_ca_file),
                                 str(settings.tls_cert_file), str(settings.tls_key_file))
            self.forwarder = SyslogForwarder(trail, host=cfg.syslog_host, port=cfg.syslog_port,
                                             ssl_context=ctx)
            if trail.metrics is not None:
                trail.metrics.track_queue_depth(self.forwarder.pending)
        self.checkpoints = CheckpointScheduler(
            CheckpointService(trail.session_factory, trail.keyring, node_id=trail.node_id,
                              export_dir=trail.checkpoint_export_dir),
            cfg.checkpoint_interval_seconds)

    def start(self) -> None:
        if self.forwarder is not None:
            self.forwarder.start()
        self.checkpoints.start()

    def stop(self) -> None:
        """Stop forwarding (unsent records stay in the outbox), then anchor the head."""
        if self.forwarder is not None:
            self.forwarder.stop()
        self.checkpoints.stop()
        if self.webhook is not None:
            self.webhook.flush(5)
            self.webhook.close()
