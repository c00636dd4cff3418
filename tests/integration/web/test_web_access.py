"""Role × HTTP endpoint: the single policy decides for every door (issue 3 "How we will know").

The table is the expected decision per role; "404" where the study exists but
is outside the principal's scope (existence must not leak).
"""

from __future__ import annotations

import pytest
from pydicom.uid import generate_uid

from dicomvault.access.principal import system_principal
from tests.integration.web.conftest import ROLES, make_instance, multipart_body, stow_headers

STUDY = "1.2.826.0.1.3680043.8.498.100"
SERIES = "1.2.826.0.1.3680043.8.498.100.1"

# endpoint -> (method, path); {sop} is filled in after seeding.
ENDPOINTS = {
    "qido-studies": ("GET", "/dicomweb/studies"),
    "qido-series": ("GET", f"/dicomweb/studies/{STUDY}/series"),
    "wado-study": ("GET", f"/dicomweb/studies/{STUDY}"),
    "wado-metadata": ("GET", f"/dicomweb/studies/{STUDY}/metadata"),
    "wado-rendered": ("GET", f"/dicomweb/studies/{STUDY}/series/{SERIES}/instances/{{sop}}/rendered"),
    "wado-uri": ("GET", f"/dicomweb/wado?requestType=WADO&studyUID={STUDY}&seriesUID={SERIES}&objectUID={{sop}}"),
    "stow": ("POST", "/dicomweb/studies"),
    "admin-users": ("GET", "/api/admin/users"),
    "admin-peers": ("GET", "/api/admin/peers"),
    "admin-roles": ("GET", "/api/admin/roles"),
    "metrics": ("GET", "/metrics"),
}

# role -> endpoint -> expected status.  QIDO of an out-of-scope study is 200 with no rows
# (filtered), marked "200-empty".
EXPECTED: dict[str, dict[str, str]] = {
    "admin": {"qido-studies": "403", "qido-series": "403", "wado-study": "404", "wado-metadata": "404",
              "wado-rendered": "404", "wado-uri": "404", "stow": "403", "admin-users": "200",
              "admin-peers": "200", "admin-roles": "200", "metrics": "200"},
    "radiologist": {"qido-studies": "200", "qido-series": "200", "wado-study": "200", "wado-metadata": "200",
                    "wado-rendered": "200", "wado-uri": "200", "stow": "200", "admin-users": "403",
                    "admin-peers": "403", "admin-roles": "403", "metrics": "403"},
    "technologist": {"qido-studies": "200", "qido-series": "200", "wado-study": "200",
                     "wado-metadata": "200", "wado-rendered": "200", "wado-uri": "200", "stow": "200",
                     "admin-users": "403", "admin-peers": "403", "admin-roles": "403", "metrics": "403"},
    "referring": {"qido-studies": "200-empty", "qido-series": "200-empty", "wado-study": "404",
                  "wado-metadata": "404", "wado-rendered": "404", "wado-uri": "404", "stow": "403",
                  "admin-users": "403", "admin-peers": "403", "admin-roles": "403", "metrics": "403"},
    "researcher": {"qido-studies": "200-empty", "qido-series": "200-empty", "wado-study": "404",
                   "wado-metadata": "404", "wado-rendered": "404", "wado-uri": "404", "stow": "403",
                   "admin-users": "403", "admin-peers": "403", "admin-roles": "403", "metrics": "403"},
    "auditor": {"qido-studies": "403", "qido-series": "403", "wado-study": "404", "wado-metadata": "404",
                "wado-rendered": "404", "wado-uri": "404", "stow": "403", "admin-users": "403",
                "admin-peers": "403", "admin-roles": "403", "metrics": "200"},
    "service": {"qido-studies": "200", "qido-series": "200", "wado-study": "200", "wado-metadata": "200",
                "wado-rendered": "200", "wado-uri": "200", "stow": "200", "admin-users": "403",
                "admin-peers": "403", "admin-roles": "403", "metrics": "403"},
    "patient": {"qido-studies": "200-empty", "qido-series": "200-empty", "wado-study": "404",
                "wado-metadata": "404", "wado-rendered": "404", "wado-uri": "404", "stow": "403",
                "admin-users": "403", "admin-peers": "403", "admin-roles": "403", "metrics": "403"},
}
CASES = [(role, endpoint) for role in ROLES for endpoint in ENDPOINTS]


@pytest.fixture
def seeded(web_services) -> str:
    """One identified study (stored by the system operator); returns its SOP Instance UID."""
    data = make_instance(STUDY, SERIES, PatientID="ACC-1", PatientName="ROLE^TABLE")
    result = web_services.archive.ingest(system_principal("seed"), data, door="test")
    return result.sop_instance_uid


@pytest.mark.parametrize(("role", "endpoint"), CASES, ids=[f"{r}-{e}" for r, e in CASES])
def test_role_endpoint_decision_matches_table(client, accounts, seeded, role, endpoint):
    method, path = ENDPOINTS[endpoint]
    path = path.replace("{sop}", seeded)
    headers = dict(accounts[role].auth)
    kwargs = {}
    if method == "POST":
        headers.update(stow_headers())
        kwargs["content"] = multipart_body([make_instance(generate_uid())])
    response = client.request(method, path, headers=headers, **kwargs)
    expected = EXPECTED[role][endpoint]
    assert str(response.status_code) == expected.split("-")[0], response.text
    if expected == "200-empty":
        assert response.json() == []
    elif expected == "200" and endpoint.startswith("qido"):
        assert response.json() and response.json()[0]["0020000D"]["Value"] == [STUDY]
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json"
        assert "ROLE^TABLE" not in response.text and "ACC-1" not in response.text


def test_referring_sees_study_after_care_team_assignment(client, accounts, seeded):
    admin, referring = accounts["admin"], accounts["referring"]
    assert client.get(f"/dicomweb/studies/{STUDY}/metadata", headers=referring.auth).status_code == 404
    r = client.put(f"/api/admin/users/{referring.username}/assignments/{STUDY}", headers=admin.auth)
    assert r.status_code == 204
    assert client.get(f"/dicomweb/studies/{STUDY}/metadata", headers=referring.auth).status_code == 200
    rows = client.get("/dicomweb/studies", headers=referring.auth).json()
    assert [row["0020000D"]["Value"][0] for row in rows] == [STUDY]


def test_break_the_glass_opens_study_for_referring_session(client, web_services, seeded):
    from tests.integration.web.test_web_auth import login_session

    session = login_session(client, web_services, "referring", "bg-ref")
    assert client.get(f"/dicomweb/studies/{STUDY}/metadata").status_code == 404
    r = client.post("/api/auth/break-glass", json={"study_uid": STUDY, "reason": "short"},
                    headers={"X-CSRF-Token": session["csrf_token"]})
    assert r.status_code == 400
    r = client.post("/api/auth/break-glass", json={"study_uid": STUDY, "reason": "patient in ER, consult"},
                    headers={"X-CSRF-Token": session["csrf_token"]})
    assert r.status_code == 200 and r.json()["expires_at"]
    assert client.get(f"/dicomweb/studies/{STUDY}/metadata").status_code == 200


def test_token_beyond_its_scope_is_refused(client, web_services, accounts, seeded):
    operator = system_principal("cli")
    tech = accounts["technologist"]
    search_only = web_services.identity.create_api_token(operator, tech.user_id, "ro", {"study:search"}, 1)
    headers = {"Authorization": f"Bearer {search_only.token}"}
    assert client.get("/dicomweb/studies", headers=headers).status_code == 200
    assert client.get(f"/dicomweb/studies/{STUDY}", headers=headers).status_code in (403, 404)
    r = client.post("/dicomweb/studies", content=multipart_body([make_instance()]),
                    headers={**headers, **stow_headers()})
    assert r.status_code == 403


def test_revoked_token_is_refused(client, accounts, seeded):
    tech = accounts["technologist"]
    r = client.post("/oauth2/introspect", data={"token": tech.token}, headers=tech.auth)
    assert r.status_code == 200 and r.json()["active"] is True
    assert client.get("/dicomweb/studies", headers=tech.auth).status_code == 200
    r = client.delete(f"/api/admin/tokens/{tech.token_id}", headers=accounts["admin"].auth)
    assert r.status_code == 204
    r = client.get("/dicomweb/studies", headers=tech.auth)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = client.post("/oauth2/introspect", data={"token": tech.token}, headers=accounts["service"].auth)
    assert r.json() == {"active": False}


def test_personal_tokens_need_an_interactive_session(client, accounts):
    r = client.post("/api/auth/tokens", json={"name": "x", "scopes": ["study:search"]},
                    headers=accounts["technologist"].auth)
    assert r.status_code == 401


@pytest.mark.parametrize("header", [
    "Bearer dv_not-a-real-token", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", "Basic dXNlcjpwYXNz",
    "Bearer", "dv_token-without-scheme",
])
def test_bad_credentials_are_401_problem(client, seeded, header):
    r = client.get("/dicomweb/studies", headers={"Authorization": header})
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
