"""Prometheus metrics: names the doors rely on, and no PHI in any label."""

from __future__ import annotations

import pytest
from audit_events_table import EVENTS
from prometheus_client.parser import text_string_to_metric_families

from dicomvault.audit.metrics import Metrics


def _samples(m: Metrics) -> list:
    text = m.render()[0].decode()
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


ROUTES = [
    ("/studies/{study}/series", "/studies/{study}/series"),
    ("/studies/1.2.826.0.1.3680043.8.498.1/series", "other"),
    ("/patients/PID-12345", "other"),
    ("/qido?PatientName=DOE", "other"),
    ("/healthz", "/healthz"),
    ("relative", "other"),
]


@pytest.mark.parametrize(("route", "label"), ROUTES)
def test_http_route_label_is_a_template_never_a_value(route: str, label: str) -> None:
    m = Metrics()
    m.http_request("get", route, 200, 0.01)
    routes = {s.labels["route"] for s in _samples(m) if "route" in s.labels}
    assert routes == {label}


def test_labels_fold_unknown_values() -> None:
    m = Metrics()
    m.dimse_request("DOE^JANE", 0x0000, 0.1)
    m.association("whatever")
    m.alert("not-a-rule")
    m.http_request("BREW", "/x", 418, 0.1)
    labels = {v for s in _samples(m) for v in s.labels.values()}
    assert "DOE^JANE" not in labels and "whatever" not in labels and "BREW" not in labels
    assert "other" in labels


def test_metrics_cover_issue_list() -> None:
    m = Metrics()
    m.http_request("GET", "/studies", 200, 0.02)
    m.dimse_request("store", 0x0000, 0.05)
    m.association("accepted")
    m.dimse_active.inc()
    m.instance_stored(1234)
    m.audit_appended([EVENTS["wado"], EVENTS["login"]], 0.003)
    m.alert("brute_force_address")
    m.track_queue_depth(lambda: 7)
    body, ctype = m.render()
    assert ctype.startswith("text/plain")
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in _samples(m)}
    assert values[("dicomvault_http_requests_total",
                   (("method", "GET"), ("route", "/studies"), ("status", "2xx")))] == 1
    assert values[("dicomvault_dimse_requests_total", (("service", "store"), ("status", "0000")))] == 1
    assert values[("dicomvault_stored_bytes_total", ())] == 1234
    assert values[("dicomvault_audit_records_total", (("event", "110104"),))] == 1
    assert values[("dicomvault_audit_syslog_queue_depth", ())] == 7
    assert values[("dicomvault_security_alerts_total", (("rule", "brute_force_address"),))] == 1
    assert values[("dicomvault_dimse_active_associations", ())] == 1


def test_two_metrics_objects_do_not_share_state() -> None:
    a, b = Metrics(), Metrics()
    a.instance_stored(10)
    assert b.render()[0].count(b"dicomvault_stored_instances_total 0.0") == 1
