"""``web/hot_routes.py``: the busiest DICOMweb GETs bypass FastAPI's dispatch and answer
exactly as FastAPI does (the reference: the same app built with ``fast_path=False``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from dicomvault.web import hot_routes
from dicomvault.web.app import create_app
from dicomvault.web.deps import CurrentPrincipal, ServicesDep
from dicomvault.web.multipart import parse_media_type, parse_multipart
from dicomvault.web.routers.common import StudyUid
from tests.integration.web.test_web_dicomweb import (
    SERIES_A1,
    STUDY_A,
    STUDY_B,
    _uid,
)
from tests.integration.web.test_web_dicomweb import archive as archive  # noqa: F401 - fixture
from tests.integration.web.test_web_dicomweb import tech as tech  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
OCTETS = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


@pytest.fixture
def reference(web_services) -> Iterator[TestClient]:
    """The same services behind an app that sends every request through FastAPI."""
    with TestClient(create_app(web_services, fast_path=False), base_url="https://testserver") as c:
        yield c


@pytest.fixture
def routed(monkeypatch) -> list[str]:
    """Paths of the requests FastAPI's own route handling served."""
    seen: list[str] = []
    original = APIRoute.handle

    async def handle(self, scope, receive, send):
        seen.append(self.path)
        await original(self, scope, receive, send)

    monkeypatch.setattr(APIRoute, "handle", handle)
    return seen


def _requests(archive: dict[str, bytes]) -> list[tuple[str, str]]:
    a1, b1 = _uid(archive["a1"]), _uid(archive["b1"])
    instance_a1 = f"/dicomweb/studies/{STUDY_A}/series/{SERIES_A1}/instances/{a1}"
    json = "application/dicom+json"
    return [
        ("/dicomweb/studies?PatientID=PID-A", json),
        ("/dicomweb/studies?PatientName=DOE*&includefield=all", json),
        ("/dicomweb/studies?StudyDate=20200101-20211231&limit=1&offset=1", json),
        ("/dicomweb/series?Modality=CT", json),
        ("/dicomweb/instances?limit=2", json),
        (f"/dicomweb/studies/{STUDY_A}/series", json),
        (f"/dicomweb/studies/{STUDY_A}/instances?includefield=00280010", json),
        (f"/dicomweb/studies/{STUDY_A}/series/{SERIES_A1}/instances", json),
        ("/dicomweb/studies?limit=many", json),                      # 400 from the endpoint
        ("/dicomweb/studies?PatientID=PID-A", "image/png"),          # 406
        (f"/dicomweb/studies/{STUDY_A}", AS_STORED),
        (f"/dicomweb/studies/{STUDY_A}/series/{SERIES_A1}", AS_STORED),
        (instance_a1, AS_STORED),
        (f"/dicomweb/studies/{STUDY_B}/series/{STUDY_B}.1/instances/{b1}", "*/*"),  # transcoded
        (f"{instance_a1}/frames/1", OCTETS),
        (f"{instance_a1}/frames/1,x", OCTETS),                      # 400: bad frame list
        (f"/dicomweb/studies/{STUDY_A}/metadata", json),
        (f"/dicomweb/studies/{STUDY_A}/series/{SERIES_A1}/metadata", json),
        (f"{instance_a1}/metadata", json),
        ("/dicomweb/studies/1.2.3.999", AS_STORED),                  # 404: unknown
        ("/dicomweb/studies/1.02.3", AS_STORED),                     # 400: not a UID (via FastAPI)
        (f"/dicomweb/studies/{STUDY_A}/series/x..y/metadata", json),  # 400 (via FastAPI)
    ]


def _comparable(response) -> tuple:
    headers = {k: v for k, v in response.headers.items() if k not in ("date", "content-type")}
    media, params = parse_media_type(response.headers.get("content-type", ""))
    params.pop("boundary", None)
    if media == "multipart/related":
        boundary = parse_media_type(response.headers["content-type"])[1]["boundary"]
        body: object = [(p.content_type, p.content) for p in parse_multipart(response.content, boundary)]
    elif "json" in media:
        body = response.json()
    else:
        body = response.content
    return response.status_code, media, params, headers, body


def test_hot_routes_answer_as_fastapi_does_and_skip_its_dispatch(client, reference, web_services, tech,
                                                                  accounts, archive, routed):
    referring = accounts["referring"]  # assigned to no study: every study is out of scope (404)
    for path, accept in _requests(archive):
        for auth in (tech.auth, referring.auth, {}):
            routed.clear()
            fast = client.get(path, headers={**auth, "Accept": accept})
            direct = list(routed)
            expected = reference.get(path, headers={**auth, "Accept": accept})
            assert routed[len(direct):], "the reference app must go through FastAPI"
            assert _comparable(fast) == _comparable(expected), (path, accept, auth.keys())
            # Well-formed paths never reach FastAPI's dispatch; malformed UIDs do, for its 400.
            if "1.02.3" in path or "x..y" in path:
                assert direct and fast.status_code == (400 if auth else 401)
            else:
                assert not direct, path
    statuses = {_comparable(client.get(p, headers={**tech.auth, "Accept": a}))[0] for p, a in _requests(archive)}
    assert {200, 400, 404, 406} <= statuses


def test_other_routes_and_methods_still_go_through_fastapi(client, tech, archive, routed):
    thumbnail = client.get(f"/dicomweb/studies/{STUDY_A}/thumbnail", headers=tech.auth)
    assert thumbnail.status_code == 200 and routed == ["/dicomweb/studies/{study}/thumbnail"]
    routed.clear()
    refused = client.delete(f"/dicomweb/studies/{STUDY_A}", headers=tech.auth)
    assert refused.status_code in (403, 404, 405) and routed


def test_the_metrics_name_the_route_template_not_the_path(client, web_services, tech, archive):
    client.get("/dicomweb/studies?PatientID=PID-A", headers={**tech.auth, "Accept": "application/dicom+json"})
    client.get(f"/dicomweb/studies/{STUDY_A}/metadata", headers=tech.auth)
    registry = client.app.state.metrics.registry
    routes = {s.labels["route"] for m in registry.collect() for s in m.samples
              if s.name == "dicomvault_http_requests_total"}
    assert {"/dicomweb/studies", "/dicomweb/studies/{study}/metadata"} <= routes
    assert not any(STUDY_A in route or "PID-A" in route for route in routes)


def _app_with(endpoint) -> tuple[FastAPI, APIRouter]:
    router = APIRouter()
    router.add_api_route("/dicomweb/studies/{study}", endpoint, methods=["GET"])
    app = FastAPI()
    app.include_router(router)
    return app, router


def test_an_endpoint_taking_more_than_the_fast_path_supplies_is_refused_at_start(monkeypatch):
    def with_query_flag(study: StudyUid, flag: int, request: Request, services: ServicesDep,
                        principal: CurrentPrincipal) -> None: ...

    def with_untyped_study(study: int, request: Request, services: ServicesDep,
                           principal: CurrentPrincipal) -> None: ...

    def fine(study: StudyUid, request: Request, services: ServicesDep, principal: CurrentPrincipal) -> None: ...

    for endpoint, message in ((with_query_flag, "neither a path parameter"),
                              (with_untyped_study, "cannot check"), (fine, None)):
        monkeypatch.setattr(hot_routes, "HOT_ENDPOINTS", (endpoint,))
        app, router = _app_with(endpoint)
        if message is None:
            assert [h.route.endpoint for h in hot_routes.hot_routes(app, (router,))] == [fine]
        else:
            with pytest.raises(RuntimeError, match=message):
                hot_routes.hot_routes(app, (router,))
    monkeypatch.setattr(hot_routes, "HOT_ENDPOINTS", (fine,))
    _app, router = _app_with(fine)
    with pytest.raises(RuntimeError, match="does not serve"):
        hot_routes.hot_routes(FastAPI(), (router,))  # declared, but not routed by this app
