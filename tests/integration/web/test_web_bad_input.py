"""Bad input at the HTTPS door: each is a 4xx problem+json, nothing is stored, the server stays up."""

from __future__ import annotations

import pytest

from tests.integration.web.conftest import BOUNDARY, make_instance, multipart_body, stow_headers

GOOD = make_instance("1.2.826.0.1.3680043.8.498.7", PatientID="BAD-INPUT")
UID = "1.2.826.0.1.3680043.8.498.7"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'

# name -> (content-type, body, expected status)
STOW_CASES: dict[str, tuple[str, bytes, int]] = {
    "no-closing-boundary": (MULTIPART, multipart_body([GOOD])[:-12], 400),
    "garbage-body": (MULTIPART, b"\x00\xff" * 500, 400),
    "empty-body": (MULTIPART, b"", 400),
    "only-closing-boundary": (MULTIPART, f"--{BOUNDARY}--\r\n".encode(), 400),
    "no-boundary-parameter": ('multipart/related; type="application/dicom"', multipart_body([GOOD]), 400),
    "invalid-boundary": ('multipart/related; type="application/dicom"; boundary="a\\"b"',
                         multipart_body([GOOD]), 400),
    "json-content-type": ("application/json", b'{"a": 1}', 415),
    "dicom-json-parts": (f'multipart/related; type="application/dicom+json"; boundary={BOUNDARY}',
                         multipart_body([b"[]"], part_type="application/dicom+json"), 415),
    "form-data": (f"multipart/form-data; boundary={BOUNDARY}", multipart_body([GOOD]), 415),
    "no-content-type": ("", multipart_body([GOOD]), 415),
    "not-dicom-part": (MULTIPART, multipart_body([b"hello, not dicom" * 10]), 409),
    "truncated-dicom-part": (MULTIPART, multipart_body([GOOD[:400]]), 409),
    "oversized-header-block": (MULTIPART, f"--{BOUNDARY}\r\n".encode() + b"X-A: " + b"a" * 9000, 400),
}

PATH_CASES = [
    "/dicomweb/studies/not-a-uid",
    "/dicomweb/studies/1.2.3.",
    "/dicomweb/studies/01.2.3",
    "/dicomweb/studies/" + "1" * 65,
    "/dicomweb/studies/..%2F..%2Fetc%2Fpasswd",
    "/dicomweb/studies/%2e%2e/metadata",
    f"/dicomweb/studies/{UID}/series/..%2F..%2F..%2Fkeys",
    f"/dicomweb/studies/{UID}/series/{UID}/instances/..%5C..%5Cwindows",
    f"/dicomweb/studies/{UID}/series/{UID}/instances/{UID}/frames/0",
    f"/dicomweb/studies/{UID}/series/{UID}/instances/{UID}/frames/1,,2",
    f"/dicomweb/studies/{UID}/series/{UID}/instances/{UID}/frames/..%2F1",
    f"/dicomweb/studies/{UID}/series/{UID}/instances/{UID}/bulkdata/..%2F..%2Fkeys%2Fkek.key",
    f"/dicomweb/studies/{UID}/series/{UID}/instances/{UID}/bulkdata/7FE00010/../../x",
    f"/dicomweb/studies/{UID}/series/{UID}/instances/{UID}/frames/1/rendered?window=1,0",
    f"/dicomweb/studies/{UID}/series/{UID}/instances/{UID}/rendered?viewport=99999,1",
    "/dicomweb/wado?requestType=WADO&studyUID=../../etc&seriesUID=1.2&objectUID=1.2",
    "/dicomweb/wado?requestType=WADO&studyUID=1.2&seriesUID=1.2&objectUID=1.2&contentType=text/html",
    "/dicomweb/wado?requestType=EVIL&studyUID=1.2&seriesUID=1.2&objectUID=1.2",
    "/api/admin/users/..%2F..%2Fadmin/roles",
    "/api/admin/users/a/assignments/not-a-uid",
    "/api/admin/peers/%00EVIL",
]

QIDO_CASES = {
    "huge-limit-digits": {"limit": "9" * 40},
    "negative-limit": {"limit": "-1"},
    "zero-limit": {"limit": "0"},
    "text-limit": {"limit": "ten"},
    "negative-offset": {"offset": "-5"},
    "huge-offset": {"offset": "99999999999"},
    "bad-date": {"StudyDate": "2020-13-45"},
    "bad-date-range": {"StudyDate": "20200101-2021"},
    "sql-in-date": {"StudyDate": "20200101' OR '1'='1"},
    "sql-in-uid": {"StudyInstanceUID": "1.2.3' OR '1'='1"},
    "sql-in-uid-list": {"StudyInstanceUID": "1.2.3,1.2.4;DROP TABLE study"},
    "bad-time": {"StudyTime": "25:99:99x"},
    "unknown-attribute": {"NotADicomKeyword": "x"},
    "unknown-tag": {"99990010": "x"},
    "bad-includefield": {"includefield": "00100010,../../etc"},
    "bad-fuzzy": {"fuzzymatching": "maybe"},
    "control-characters": {"PatientName": "DOE\x00^JOHN"},
    "very-long-value": {"PatientName": "A" * 5000},
    "bad-int-match-series": {"SeriesNumber": "one"},
    "bad-uid-instances": {"SOPInstanceUID": "x.y"},
}
#: cases aimed at another QIDO resource than /studies
QIDO_PATHS = {"bad-int-match-series": "/dicomweb/series", "bad-uid-instances": "/dicomweb/instances"}


@pytest.fixture
def tech(accounts):
    return accounts["technologist"]


def _study_count(client, tech) -> int:
    return len(client.get("/dicomweb/studies", headers=tech.auth).json())


def _assert_problem(response, status_range=range(400, 500)) -> None:
    assert response.status_code in status_range, (response.status_code, response.text)
    assert response.headers["content-type"] in ("application/problem+json", "application/dicom+json")
    assert "Traceback" not in response.text and "BAD-INPUT" not in response.text


@pytest.mark.parametrize("case", list(STOW_CASES))
def test_bad_stow_is_4xx_and_stores_nothing(client, tech, case):
    content_type, body, status = STOW_CASES[case]
    headers = {**tech.auth}
    if content_type:
        headers["Content-Type"] = content_type
    r = client.post("/dicomweb/studies", content=body, headers=headers)
    assert r.status_code == status, r.text
    _assert_problem(r)
    if status == 409:  # a STOW response dataset with the failure reasons
        assert r.json()["00081198"]["Value"][0]["00081197"]["Value"][0] in (0xC000, 0xA900)
    else:
        assert r.headers["content-type"] == "application/problem+json"
    assert _study_count(client, tech) == 0
    assert client.get("/healthz").status_code == 200


def test_body_over_limit_is_413_by_content_length(client, tech):
    big = multipart_body([b"\0" * (3 * 1024 * 1024)])  # limit is 2 MiB in these tests
    r = client.post("/dicomweb/studies", content=big, headers={**tech.auth, **stow_headers()})
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
    assert _study_count(client, tech) == 0


def test_chunked_body_over_limit_is_413(client, tech):
    def chunks():
        yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        for _ in range(48):
            yield b"\0" * 65536

    r = client.post("/dicomweb/studies", content=chunks(), headers={**tech.auth, **stow_headers()})
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
    assert _study_count(client, tech) == 0
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("path", PATH_CASES)
def test_bad_path_parameter_is_4xx_problem(client, tech, accounts, path):
    headers = accounts["admin"].auth if path.startswith("/api/admin") else tech.auth
    method = "PUT" if "assignments" in path or "/peers/" in path else "GET"
    r = client.request(method, path, headers=headers)
    _assert_problem(r)
    assert r.headers["content-type"] == "application/problem+json"
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("case", list(QIDO_CASES))
def test_absurd_qido_parameter_is_400_problem(client, tech, case):
    path = QIDO_PATHS.get(case, "/dicomweb/studies")
    r = client.get(path, params=QIDO_CASES[case], headers=tech.auth)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert set(r.json()) >= {"type", "title", "status", "detail"}
    assert client.get("/healthz").status_code == 200


def test_repeated_matching_parameter_is_400(client, tech):
    r = client.get("/dicomweb/studies?PatientID=A&PatientID=B", headers=tech.auth)
    assert r.status_code == 400 and r.json()["code"] == "repeated-parameter"


def test_injection_in_text_key_matches_nothing_and_leaks_nothing(client, tech):
    client.post("/dicomweb/studies", content=multipart_body([GOOD]), headers={**tech.auth, **stow_headers()})
    for value in ("' OR '1'='1", "*' OR 1=1 --", "%", "_", "\\"):
        r = client.get("/dicomweb/studies", params={"PatientName": value}, headers=tech.auth)
        assert r.status_code == 200 and r.json() == [], value
    assert _study_count(client, tech) == 1


def test_unacceptable_accept_header_is_406(client, tech):
    client.post("/dicomweb/studies", content=multipart_body([GOOD]), headers={**tech.auth, **stow_headers()})
    r = client.get("/dicomweb/studies", headers={**tech.auth, "Accept": "application/dicom+xml"})
    assert r.status_code == 406 and r.headers["content-type"] == "application/problem+json"
    r = client.get(f"/dicomweb/studies/{UID}", headers={
        **tech.auth, "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'})
    assert r.status_code == 406


def test_truncated_body_after_complete_parts_stores_nothing(client, tech):
    complete = multipart_body([GOOD, make_instance("1.2.826.0.1.3680043.8.498.8")])
    r = client.post("/dicomweb/studies", content=complete[:-40], headers={**tech.auth, **stow_headers()})
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    assert _study_count(client, tech) == 0
