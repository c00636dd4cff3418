"""Security headers, CORS, the OpenAPI document and metrics hygiene on the HTTPS door."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request

from dicomvault.web.app import create_app
from tests.integration.web.conftest import make_instance, multipart_body, stow_headers

UID = "1.2.826.0.1.3680043.8.498.301"
REQUIRED = {
    "strict-transport-security": "max-age=63072000; includeSubDomains",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


@pytest.mark.parametrize(("method", "path", "auth", "status"), [
    ("GET", "/healthz", False, 200),
    ("GET", "/dicomweb/studies", True, 200),
    ("GET", "/dicomweb/studies", False, 401),
    ("GET", f"/dicomweb/studies/{UID}", True, 404),
    ("GET", "/no/such/path", False, 404),
    ("DELETE", "/healthz", False, 405),
    ("GET", "/api/openapi.json", False, 200),
])
def test_security_headers_on_every_response(client, accounts, method, path, auth, status):
    headers = accounts["technologist"].auth if auth else {}
    r = client.request(method, path, headers=headers)
    assert r.status_code == status
    for name, value in REQUIRED.items():
        assert r.headers[name] == value, name
    csp = r.headers["content-security-policy"]
    assert csp.startswith("default-src 'none'") and "frame-ancestors 'none'" in csp
    if path.startswith("/dicomweb"):
        assert r.headers["cross-origin-resource-policy"] == "same-origin"
    if status >= 400:
        assert r.headers["content-type"] == "application/problem+json"


def test_route_can_replace_csp_and_ask_for_cross_origin_isolation(web_services):
    app = create_app(web_services)

    @app.get("/viewer-probe")
    def probe(request: Request) -> dict[str, str]:
        request.state.csp = "default-src 'self'"
        request.state.cross_origin_isolation = True
        return {}

    with TestClient(app, base_url="https://testserver") as c:
        r = c.get("/viewer-probe")
        plain = c.get("/healthz")
    assert r.status_code == 200
    assert r.headers["content-security-policy"] == "default-src 'self'"
    assert r.headers["cross-origin-opener-policy"] == "same-origin"
    assert r.headers["cross-origin-embedder-policy"] == "require-corp"
    assert "cross-origin-opener-policy" not in plain.headers
    assert plain.headers["content-security-policy"].startswith("default-src 'none'")


def test_cors_preflight_for_configured_origin_needs_no_authentication(client):
    r = client.options("/dicomweb/studies", headers={
        "Origin": "https://viewer.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization, accept"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://viewer.example"
    assert "authorization" in r.headers["access-control-allow-headers"].lower()


def test_cors_refuses_other_origins(client, accounts):
    r = client.options("/dicomweb/studies", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in r.headers
    r = client.get("/dicomweb/studies", headers={"Origin": "https://evil.example",
                                                 **accounts["technologist"].auth})
    assert "access-control-allow-origin" not in r.headers
    r = client.get("/dicomweb/studies", headers={"Origin": "https://viewer.example",
                                                 **accounts["technologist"].auth})
    assert r.headers["access-control-allow-origin"] == "https://viewer.example"


def test_no_cors_without_configured_origins(settings_factory, keyring):
    from dicomvault.index.migrate import upgrade
    from dicomvault.services.context import build_services

    services = build_services(settings_factory(), keyring=keyring)
    upgrade(services.engine)
    try:
        with TestClient(create_app(services), base_url="https://testserver") as c:
            r = c.options("/dicomweb/studies", headers={"Origin": "https://viewer.example",
                                                        "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in r.headers
    finally:
        services.close()


def test_openapi_document_describes_admin_api_and_dicomweb(client):
    doc = client.get("/api/openapi.json").json()
    paths = set(doc["paths"])
    for path in ("/api/admin/users", "/api/admin/users/{user}/roles", "/api/admin/peers/{ae_title}",
                 "/api/admin/users/{user}/assignments/{study}", "/api/admin/oauth-clients",
                 "/dicomweb/studies", "/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/{frames}",
                 "/api/auth/login", "/oauth2/token"):
        assert path in paths, path


def test_metrics_count_route_templates_never_uids(client, accounts):
    tech = accounts["technologist"]
    client.post("/dicomweb/studies", content=multipart_body([make_instance(UID, PatientID="METRIC-PID")]),
                headers={**tech.auth, **stow_headers()})
    client.get(f"/dicomweb/studies/{UID}/metadata", headers=tech.auth)
    client.get("/dicomweb/studies", params={"PatientID": "METRIC-PID"}, headers=tech.auth)
    r = client.get("/metrics", headers=accounts["auditor"].auth)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'route="/dicomweb/studies/{study}/metadata"' in text
    assert UID not in text and "METRIC-PID" not in text
    assert "dicomvault_http_request_duration_seconds" in text


def test_metrics_need_authentication(client):
    assert client.get("/metrics").status_code == 401


def test_readiness_reports_database(client):
    assert client.get("/readyz").json() == {"status": "ready"}


def test_unexpected_error_is_opaque_500_without_phi(web_services, caplog):
    app = create_app(web_services)

    @app.get("/boom")
    def boom() -> None:
        raise ValueError("PatientName=DOE^SECRET could not be parsed")

    with TestClient(app, base_url="https://testserver") as c:
        r = c.get("/boom")
    assert r.status_code == 500 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["incident"] and "SECRET" not in r.text
    assert r.headers["strict-transport-security"]
    assert "SECRET" not in caplog.text and r.json()["incident"] in caplog.text


def test_tampered_blob_is_500_incident_and_not_served(client, web_services, accounts):
    from dicomvault.access.principal import system_principal

    tech = accounts["technologist"]
    data = make_instance(UID, PatientName="TAMPER^TEST")
    result = web_services.archive.ingest(system_principal("seed"), data, door="test")
    ref, = web_services.archive.locate(system_principal("seed"), "STUDY", {"StudyInstanceUID": UID},
                                       door="test", purpose="test")
    path = web_services.settings.blob_root / ref.blob_key
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    instance = f"/dicomweb/studies/{UID}/series/{ref.series_instance_uid}/instances/{ref.sop_instance_uid}"
    r = client.get(f"{instance}/rendered", headers={**tech.auth, "Accept": "image/png"})
    assert r.status_code == 500 and r.json()["code"] == "tampered" and r.json()["incident"]
    assert "TAMPER" not in r.text and result.sop_instance_uid not in r.text
    # The metadata kept at ingest is sealed on its own (verified) and still answers.
    meta = client.get(f"{instance}/metadata", headers=tech.auth)
    assert meta.status_code == 200 and meta.json()[0]["00100010"]["Value"] == [{"Alphabetic": "TAMPER^TEST"}]
