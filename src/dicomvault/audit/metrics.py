"""Prometheus metrics for ``/metrics`` (requests, latencies, storage, DIMSE, audit, alerts).

One ``Metrics`` object per process owns its own ``CollectorRegistry`` (no
global state).  Labels never carry PHI: only fixed vocabularies (HTTP method,
route *template*, status class, DIMSE service, event code, alert rule) are
accepted, and a value outside the vocabulary is folded into ``other``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

if TYPE_CHECKING:
    from dicomvault.audit.events import AuditEvent

_BRACED = re.compile(r"\{[^}]*\}")
_CONCRETE = re.compile(r"\d{3,}|\d\.\d|[?#=@ ]")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_DIMSE = frozenset({"echo", "store", "find", "move", "get"})
_ASSOC_RESULTS = frozenset({"accepted", "rejected", "aborted", "tls_failed"})
_RULES = frozenset({
    "brute_force_address", "brute_force_account", "bulk_retrieval", "break_glass",
    "outside_hours", "chain_integrity", "object_integrity", "tls_handshake",
})


def _pick(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else "other"


def _route(template: str) -> str:
    """Keep route templates ("/studies/{study}"); fold raw paths (UIDs, IDs) into "other"."""
    rest = _BRACED.sub("", template)
    if not template.startswith("/") or len(template) > 120 or _CONCRETE.search(rest):
        return "other"
    return template


class Metrics:
    """All dicomvault metrics on a private registry; the doors call the methods below."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "dicomvault_http_requests", "HTTP requests", ["method", "route", "status"], registry=r)
        self.http_latency = Histogram(
            "dicomvault_http_request_duration_seconds", "HTTP request latency",
            ["method", "route"], registry=r)
        self.dimse_requests = Counter(
            "dicomvault_dimse_requests", "DIMSE requests", ["service", "status"], registry=r)
        self.dimse_latency = Histogram(
            "dicomvault_dimse_request_duration_seconds", "DIMSE request latency", ["service"],
            registry=r)
        self.dimse_associations = Counter(
            "dicomvault_dimse_associations", "DIMSE associations", ["result"], registry=r)
        self.dimse_active = Gauge(
            "dicomvault_dimse_active_associations", "Open DIMSE associations", registry=r)
        self.stored_instances = Counter(
            "dicomvault_stored_instances", "Instances stored", registry=r)
        self.stored_bytes = Counter("dicomvault_stored_bytes", "Bytes stored", registry=r)
        self.audit_records = Counter(
            "dicomvault_audit_records", "Audit records appended", ["event"], registry=r)
        self.audit_append_latency = Histogram(
            "dicomvault_audit_append_duration_seconds", "Audit append latency", registry=r)
        self.audit_queue_depth = Gauge(
            "dicomvault_audit_syslog_queue_depth", "Audit records waiting for the syslog collector",
            registry=r)
        self.alerts = Counter("dicomvault_security_alerts", "Security alerts raised", ["rule"],
                              registry=r)

    # -- door hooks ------------------------------------------------------------

    def http_request(self, method: str, route_template: str, status: int, seconds: float) -> None:
        """Count one HTTP request; ``route_template`` is the router path, never the raw URL."""
        m, route = _pick(method.upper(), _METHODS), _route(route_template)
        self.http_requests.labels(m, route, f"{status // 100}xx").inc()
        self.http_latency.labels(m, route).observe(seconds)

    def dimse_request(self, service: str, status: int, seconds: float) -> None:
        """Count one DIMSE request (PS3.7 status as a 4-hex-digit label)."""
        svc = _pick(service, _DIMSE)
        self.dimse_requests.labels(svc, f"{status & 0xFFFF:04X}").inc()
        self.dimse_latency.labels(svc).observe(seconds)

    def association(self, result: str) -> None:
        self.dimse_associations.labels(_pick(result, _ASSOC_RESULTS)).inc()

    def instance_stored(self, size_bytes: int) -> None:
        self.stored_instances.inc()
        self.stored_bytes.inc(max(0, size_bytes))

    def audit_appended(self, events: Sequence[AuditEvent], seconds: float) -> None:
        for event in events:
            self.audit_records.labels(event.event_id.value.code).inc()
        self.audit_append_latency.observe(seconds)

    def alert(self, rule: str) -> None:
        self.alerts.labels(_pick(rule, _RULES)).inc()

    def track_queue_depth(self, depth: Callable[[], int]) -> None:
        """Report the syslog outbox depth at scrape time."""
        self.audit_queue_depth.set_function(depth)

    # -- exposition --------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """Body and content type for ``GET /metrics`` (Prometheus text format 0.0.4)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
