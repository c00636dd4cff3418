"""STOW-RS, QIDO-RS, WADO-RS and WADO-URI through the app (PS3.18 10.4-10.6, 9)."""

from __future__ import annotations

import io

import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from dicomvault.services.dicomfile import split_part10
from dicomvault.web.multipart import parse_media_type, parse_multipart
from tests.integration.web.conftest import BOUNDARY, make_instance, multipart_body, stow_headers

ELE = "1.2.840.10008.1.2.1"
STUDY_A, STUDY_B = "1.2.826.0.1.3680043.8.498.201", "1.2.826.0.1.3680043.8.498.202"
SERIES_A1, SERIES_A2 = f"{STUDY_A}.1", f"{STUDY_A}.2"


def _parts(response) -> list[tuple[str, bytes]]:
    media, params = parse_media_type(response.headers["content-type"])
    assert media == "multipart/related"
    return [(p.content_type, p.content) for p in parse_multipart(response.content, params["boundary"])]


def _store(client, auth, instances: list[bytes], path: str = "/dicomweb/studies"):
    return client.post(path, content=multipart_body(instances), headers={**auth, **stow_headers()})


@pytest.fixture
def tech(accounts):
    return accounts["technologist"]


@pytest.fixture
def archive(client, tech) -> dict[str, bytes]:
    """Two studies: A (two CT series, 3 instances, patient DOE^JANE) and B (one MR, SMITH^JOHN)."""
    common_a = {"PatientName": "DOE^JANE", "PatientID": "PID-A", "StudyDate": "20200115",
                "AccessionNumber": "ACC-A", "StudyDescription": "CHEST CT"}
    a1 = make_instance(STUDY_A, SERIES_A1, SeriesNumber=1, InstanceNumber=1, **common_a)
    a2 = make_instance(STUDY_A, SERIES_A1, SeriesNumber=1, InstanceNumber=2, **common_a)
    a3 = make_instance(STUDY_A, SERIES_A2, SeriesNumber=2, InstanceNumber=1, **common_a)
    b1 = make_instance(STUDY_B, f"{STUDY_B}.1", source="MR_small_implicit.dcm", PatientName="SMITH^JOHN",
                       PatientID="PID-B", StudyDate="20211201", AccessionNumber="ACC-B")
    r = _store(client, tech.auth, [a1, a2, a3, b1])
    assert r.status_code == 200, r.text
    return {"a1": a1, "a2": a2, "a3": a3, "b1": b1}


def _uid(data: bytes, keyword: str = "SOPInstanceUID") -> str:
    return str(getattr(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True), keyword))


# -- STOW-RS ------------------------------------------------------------------------
def test_stow_all_stored_is_200_with_referenced_sop_sequence(client, tech):
    data = [make_instance(STUDY_A, SERIES_A1) for _ in range(3)]
    r = _store(client, tech.auth, data)
    assert r.status_code == 200 and r.headers["content-type"] == "application/dicom+json"
    body = r.json()
    refs = body["00081199"]["Value"]
    assert [ref["00081155"]["Value"][0] for ref in refs] == [_uid(d) for d in data]
    assert [ref["00081190"]["Value"][0].split("/dicomweb")[1] for ref in refs] == [
        f"/studies/{STUDY_A}/series/{SERIES_A1}/instances/{_uid(d)}" for d in data]
    assert "00081198" not in body
    assert body["00081190"]["Value"][0].endswith(f"/dicomweb/studies/{STUDY_A}")


def test_stow_partial_failure_is_202_with_failed_sop_sequence(client, tech):
    good, bad = make_instance(STUDY_A, SERIES_A1), make_instance(STUDY_A, SERIES_A1)[:300]
    r = _store(client, tech.auth, [good, bad])
    assert r.status_code == 202
    failed = r.json()["00081198"]["Value"]
    assert len(failed) == 1 and failed[0]["00081197"]["Value"] == [0xC000]
    assert len(r.json()["00081199"]["Value"]) == 1


def test_stow_conflicting_object_under_same_uid_is_409(client, tech):
    data = make_instance(STUDY_A, SERIES_A1)
    assert _store(client, tech.auth, [data]).status_code == 200
    again = _store(client, tech.auth, [data])  # identical bytes: idempotent, same instance URL
    assert again.status_code == 200
    assert again.json()["00081199"]["Value"][0]["00081190"]["Value"][0].endswith(
        f"/studies/{STUDY_A}/series/{SERIES_A1}/instances/{_uid(data)}")
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.InstanceNumber = 99
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    r = _store(client, tech.auth, [buf.getvalue()])
    assert r.status_code == 409
    assert r.json()["00081198"]["Value"][0]["00081155"]["Value"] == [ds.SOPInstanceUID]


def test_stow_to_study_refuses_instance_of_other_study(client, tech):
    r = _store(client, tech.auth, [make_instance(STUDY_B), make_instance(STUDY_A, SERIES_A1)],
               path=f"/dicomweb/studies/{STUDY_A}")
    assert r.status_code == 202
    assert r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]


def test_stow_accepts_unquoted_type_and_chunked_body(client, tech):
    data = [make_instance(STUDY_A, SERIES_A1) for _ in range(2)]
    body = multipart_body(data)

    def chunks():
        for i in range(0, len(body), 7001):
            yield body[i:i + 7001]

    r = client.post("/dicomweb/studies", content=chunks(), headers={
        **tech.auth, "Content-Type": f"multipart/related; type=application/dicom; boundary={BOUNDARY}"})
    assert r.status_code == 200 and len(r.json()["00081199"]["Value"]) == 2


# -- QIDO-RS --------------------------------------------------------------------------
QIDO_CASES = [
    ("/dicomweb/studies", {}, {STUDY_A, STUDY_B}),
    ("/dicomweb/studies", {"PatientID": "PID-A"}, {STUDY_A}),
    ("/dicomweb/studies", {"00100020": "PID-B"}, {STUDY_B}),
    ("/dicomweb/studies", {"PatientName": "DOE*"}, {STUDY_A}),
    ("/dicomweb/studies", {"PatientName": "doe^jane"}, {STUDY_A}),
    ("/dicomweb/studies", {"PatientName": "*JOHN*"}, {STUDY_B}),
    ("/dicomweb/studies", {"StudyDate": "20200101-20201231"}, {STUDY_A}),
    ("/dicomweb/studies", {"StudyDate": "20210101-"}, {STUDY_B}),
    ("/dicomweb/studies", {"StudyDate": "-20191231"}, set()),
    ("/dicomweb/studies", {"StudyInstanceUID": f"{STUDY_A},{STUDY_B}"}, {STUDY_A, STUDY_B}),
    ("/dicomweb/studies", {"StudyInstanceUID": f"{STUDY_B}\\1.2.3"}, {STUDY_B}),
    ("/dicomweb/studies", {"ModalitiesInStudy": "MR"}, {STUDY_B}),
    ("/dicomweb/studies", {"AccessionNumber": "ACC-A"}, {STUDY_A}),
    ("/dicomweb/series", {"Modality": "CT"}, {STUDY_A}),
    ("/dicomweb/instances", {"PatientID": "PID-B"}, {STUDY_B}),
]


@pytest.mark.parametrize(("path", "params", "studies"), QIDO_CASES)
def test_qido_matching(client, tech, archive, path, params, studies):
    r = client.get(path, params=params, headers=tech.auth)
    assert r.status_code == 200 and r.headers["content-type"] == "application/dicom+json"
    assert {row["0020000D"]["Value"][0] for row in r.json()} == studies


def test_qido_nested_series_and_instances(client, tech, archive):
    series = client.get(f"/dicomweb/studies/{STUDY_A}/series", headers=tech.auth).json()
    assert sorted(s["0020000E"]["Value"][0] for s in series) == [SERIES_A1, SERIES_A2]
    for row in series:  # OHIF's series attributes
        assert {"0020000D", "0020000E", "00080060", "00200011", "00201209", "00081190"} <= set(row)
    inst = client.get(f"/dicomweb/studies/{STUDY_A}/series/{SERIES_A1}/instances", headers=tech.auth).json()
    assert sorted(i["00080018"]["Value"][0] for i in inst) == sorted([_uid(archive["a1"]), _uid(archive["a2"])])
    assert inst[0]["00081190"]["Value"][0].endswith(f"/instances/{inst[0]['00080018']['Value'][0]}")
    all_inst = client.get(f"/dicomweb/studies/{STUDY_A}/instances", headers=tech.auth).json()
    assert len(all_inst) == 3


def test_qido_study_row_has_ohif_attributes_and_includefield(client, tech, archive):
    rows = client.get("/dicomweb/studies", params={"PatientID": "PID-A"}, headers=tech.auth).json()
    row = rows[0]
    for tag in ("0020000D", "00080020", "00080030", "00080050", "00100020", "00100010", "00201208",
                "00080061", "00080090"):
        assert tag in row, tag
    assert row["00100010"]["Value"] == [{"Alphabetic": "DOE^JANE"}]
    assert row["00201208"]["Value"] == [3]
    assert row["00080061"]["Value"] == ["CT"]
    narrow = client.get("/dicomweb/series", params={"PatientID": "PID-A"}, headers=tech.auth).json()[0]
    assert "00081030" in narrow  # study defaults on a top-level series search
    series = client.get(f"/dicomweb/studies/{STUDY_A}/series", headers=tech.auth).json()[0]
    assert "00100010" not in series
    wide = client.get(f"/dicomweb/studies/{STUDY_A}/series", params={"includefield": "00100010,PatientID"},
                      headers=tech.auth).json()[0]
    assert wide["00100010"]["Value"] == [{"Alphabetic": "DOE^JANE"}] and "00100020" in wide
    every = client.get(f"/dicomweb/studies/{STUDY_A}/series", params={"includefield": "all"},
                       headers=tech.auth).json()[0]
    assert {"00100010", "00100020", "00081030"} <= set(every)


def test_qido_limit_offset_pages_without_overlap(client, tech, archive):
    seen: list[str] = []
    for offset in range(0, 4):
        page = client.get("/dicomweb/instances", params={"limit": "1", "offset": str(offset)},
                          headers=tech.auth).json()
        seen += [p["00080018"]["Value"][0] for p in page]
    assert len(seen) == 4 == len(set(seen))
    empty = client.get("/dicomweb/instances", params={"offset": "4"}, headers=tech.auth)
    assert empty.status_code == 200 and empty.json() == []


def test_qido_limit_above_server_maximum_is_capped_with_warning(client, web_services, tech, archive):
    huge = str(web_services.settings.archive.max_query_results * 10)
    r = client.get("/dicomweb/studies", params={"limit": huge}, headers=tech.auth)
    assert r.status_code == 200 and len(r.json()) == 2
    assert "exceeded the maximum" in r.headers["warning"]
    r = client.get("/dicomweb/studies", params={"limit": "1"}, headers=tech.auth)
    assert len(r.json()) == 1 and "warning" in r.headers


# -- WADO-RS -------------------------------------------------------------------------------
def test_retrieve_study_as_stored_is_byte_identical(client, tech, archive):
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    r = client.get(f"/dicomweb/studies/{STUDY_A}", headers={**tech.auth, "Accept": accept})
    assert r.status_code == 200
    parts = _parts(r)
    assert len(parts) == 3
    sent = {_uid(archive[k]): split_part10(archive[k])[1] for k in ("a1", "a2", "a3")}
    for content_type, content in parts:
        assert content_type.startswith("application/dicom; transfer-syntax=")
        assert split_part10(content)[1] == sent[_uid(content)]


@pytest.mark.parametrize("accept", [
    None, "*/*", 'multipart/related; type="application/dicom"', "multipart/related; type=application/dicom",
    f"multipart/related; type=application/dicom; transfer-syntax={ELE}",
])
def test_retrieve_default_is_explicit_vr_little_endian(client, tech, archive, accept):
    headers = dict(tech.auth)
    if accept:
        headers["Accept"] = accept
    r = client.get(f"/dicomweb/studies/{STUDY_B}", headers=headers)  # stored implicit VR LE
    assert r.status_code == 200
    (content_type, content), = _parts(r)
    assert content_type == f"application/dicom; transfer-syntax={ELE}"
    ds = pydicom.dcmread(io.BytesIO(content))
    original = pydicom.dcmread(io.BytesIO(archive["b1"]))
    assert ds.file_meta.TransferSyntaxUID == ELE
    assert ds.PixelData == original.PixelData and ds.PatientName == "SMITH^JOHN"


def test_retrieve_series_and_instance(client, tech, archive):
    r = client.get(f"/dicomweb/studies/{STUDY_A}/series/{SERIES_A1}", headers=tech.auth)
    assert len(_parts(r)) == 2
    sop = _uid(archive["a3"])
    r = client.get(f"/dicomweb/studies/{STUDY_A}/series/{SERIES_A2}/instances/{sop}", headers=tech.auth)
    (_, content), = _parts(r)
    assert _uid(content) == sop
    r = client.get(f"/dicomweb/studies/{STUDY_A}/series/{SERIES_A1}/instances/{sop}", headers=tech.auth)
    assert r.status_code == 404


def test_retrieve_compressed_decodes_on_request(client, tech):
    data = make_instance(STUDY_A, SERIES_A1, source="JPEG2000.dcm")
    assert _store(client, tech.auth, [data]).status_code == 200
    sop = _uid(data)
    url = f"/dicomweb/studies/{STUDY_A}/series/{SERIES_A1}/instances/{sop}"
    (ctype, content), = _parts(client.get(url, headers={
        **tech.auth, "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}))
    assert ctype.endswith("1.2.840.10008.1.2.4.91") and split_part10(content)[1] == split_part10(data)[1]
    (ctype, content), = _parts(client.get(url, headers=tech.auth))
    assert ctype.endswith(ELE)
    decoded = pydicom.dcmread(io.BytesIO(content))
    assert decoded.pixel_array.shape == pydicom.dcmread(io.BytesIO(data)).pixel_array.shape
    frames = client.get(f"{url}/frames/1", headers={
        **tech.auth, "Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"})
    (ctype, frame), = _parts(frames)
    assert ctype == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.91"
    assert frame[:2] == b"\xff\x4f"  # a J2K codestream (SOC marker)
    native = client.get(f"{url}/frames/1", headers=tech.auth)
    (ctype, raw), = _parts(native)
    assert ctype.endswith(ELE) and len(raw) == decoded.Rows * decoded.Columns * decoded.BitsAllocated // 8


def test_metadata_has_bulkdata_uris_that_resolve(client, tech, archive):
    r = client.get(f"/dicomweb/studies/{STUDY_A}/series/{SERIES_A1}/metadata", headers=tech.auth)
    assert r.status_code == 200 and r.headers["content-type"] == "application/dicom+json"
    items = r.json()
    assert len(items) == 2
    item = items[0]
    assert item["00100010"]["Value"] == [{"Alphabetic": "DOE^JANE"}]
    pixel = item["7FE00010"]
    assert "Value" not in pixel and "InlineBinary" not in pixel
    uri = pixel["BulkDataURI"]
    assert uri.startswith("https://testserver/dicomweb/studies/") and uri.endswith("/bulkdata/7FE00010")
    bulk = client.get(uri.replace("https://testserver", ""), headers=tech.auth)
    (ctype, content), = _parts(bulk)
    sop = item["00080018"]["Value"][0]
    source = next(v for v in archive.values() if _uid(v) == sop)
    assert content == pydicom.dcmread(io.BytesIO(source)).PixelData
    study_meta = client.get(f"/dicomweb/studies/{STUDY_A}/metadata", headers=tech.auth).json()
    assert len(study_meta) == 3


def _native_multiframe() -> bytes:
    """A two-frame RGB instance in Explicit VR Little Endian (decoded from the RLE test file)."""
    ds = pydicom.dcmread(io.BytesIO(make_instance(STUDY_A, SERIES_A1, source="SC_rgb_rle_2frame.dcm")))
    ds.decompress()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_frames_of_native_multiframe_instance(client, tech):
    data = _native_multiframe()
    assert _store(client, tech.auth, [data]).status_code == 200
    ds = pydicom.dcmread(io.BytesIO(data))
    size = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
    url = f"/dicomweb/studies/{STUDY_A}/series/{SERIES_A1}/instances/{ds.SOPInstanceUID}/frames/2,1"
    r = client.get(url, headers={**tech.auth, "Accept": "multipart/related; type=application/octet-stream"})
    frames = [content for _, content in _parts(r)]
    assert frames == [ds.PixelData[size:2 * size], ds.PixelData[:size]]
    out_of_range = client.get(url.replace("2,1", "3"), headers=tech.auth)
    assert out_of_range.status_code == 404
    rendered = client.get(url.replace("/frames/2,1", "/frames/2/rendered"), headers=tech.auth)
    assert Image.open(io.BytesIO(rendered.content)).mode == "RGB"


@pytest.mark.parametrize(("accept", "fmt"), [("image/jpeg", "JPEG"), ("image/png", "PNG"), (None, "JPEG")])
def test_rendered_and_thumbnail(client, tech, archive, accept, fmt):
    sop = _uid(archive["a1"])
    headers = {**tech.auth, **({"Accept": accept} if accept else {})}
    base = f"/dicomweb/studies/{STUDY_A}/series/{SERIES_A1}/instances/{sop}"
    for url, size in ((f"{base}/rendered", (128, 128)), (f"{base}/frames/1/rendered?window=40,400", (128, 128)),
                      (f"{base}/rendered?viewport=64,64", (64, 64)), (f"{base}/thumbnail", (128, 128)),
                      (f"/dicomweb/studies/{STUDY_A}/thumbnail", (128, 128)),
                      (f"/dicomweb/studies/{STUDY_A}/series/{SERIES_A1}/thumbnail", (128, 128))):
        r = client.get(url, headers=headers)
        assert r.status_code == 200, url
        image = Image.open(io.BytesIO(r.content))
        assert image.format == fmt and image.size == size, url


def test_window_changes_rendered_pixels(client, tech, archive):
    sop = _uid(archive["a1"])
    base = f"/dicomweb/studies/{STUDY_A}/series/{SERIES_A1}/instances/{sop}/rendered"
    narrow = client.get(f"{base}?window=0,10", headers={**tech.auth, "Accept": "image/png"}).content
    wide = client.get(f"{base}?window=0,4000", headers={**tech.auth, "Accept": "image/png"}).content
    assert Image.open(io.BytesIO(narrow)).tobytes() != Image.open(io.BytesIO(wide)).tobytes()


def test_wado_uri_returns_dicom_and_jpeg(client, tech, archive):
    sop = _uid(archive["b1"])
    query = f"requestType=WADO&studyUID={STUDY_B}&seriesUID={STUDY_B}.1&objectUID={sop}"
    r = client.get(f"/dicomweb/wado?{query}&contentType=application/dicom", headers=tech.auth)
    assert r.status_code == 200 and r.headers["content-type"] == "application/dicom"
    assert split_part10(r.content)[1] == split_part10(archive["b1"])[1]
    r = client.get(f"/dicomweb/wado?{query}&contentType=application/dicom&transferSyntax={ELE}",
                   headers=tech.auth)
    assert pydicom.dcmread(io.BytesIO(r.content)).file_meta.TransferSyntaxUID == ELE
    r = client.get(f"/dicomweb/wado?{query}&windowCenter=100&windowWidth=200&rows=32", headers=tech.auth)
    assert r.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(r.content)).size[1] == 32


def test_retrieve_of_unknown_study_is_404(client, tech, archive):
    r = client.get(f"/dicomweb/studies/{generate_uid()}", headers=tech.auth)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


def test_retrieve_as_stored_declares_its_exact_length(client, tech, archive):
    r = client.get(f"/dicomweb/studies/{STUDY_A}", headers=tech.auth)
    assert r.status_code == 200
    assert int(r.headers["content-length"]) == len(r.content)
    assert (sorted(split_part10(content)[1] for _, content in _parts(r))
            == sorted(split_part10(archive[k])[1] for k in ("a1", "a2", "a3")))
    sop = _uid(archive["b1"])
    url = f"/dicomweb/studies/{STUDY_B}/series/{STUDY_B}.1/instances/{sop}"
    as_stored = {**tech.auth, "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    one = client.get(url, headers=as_stored)
    assert int(one.headers["content-length"]) == len(one.content) and len(_parts(one)) == 1
    transcoded = client.get(url, headers=tech.auth)  # implicit VR stored, explicit VR LE asked
    assert "content-length" not in transcoded.headers and len(_parts(transcoded)) == 1


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "streamed"])
def test_retrieve_records_the_transfer_once_sent(client, web_services, tech, archive, monkeypatch,
                                                 buffered):
    """Small bodies go out in one piece, large ones stream; either way the same bytes and
    one "Instances Transferred" record (110104, R) after "Begin Transferring" (110102)."""
    from dicomvault.audit.query import AuditFilter, AuditQueryService
    from dicomvault.web.routers import wado
    from tests.integration.audit.test_audit_doors import AUDITOR

    if not buffered:
        monkeypatch.setattr(wado, "BUFFERED_BODY_LIMIT", 0)
    start, _ = web_services.audit.head()
    r = client.get(f"/dicomweb/studies/{STUDY_A}", headers=tech.auth)
    assert r.status_code == 200 and int(r.headers["content-length"]) == len(r.content)
    assert (sorted(split_part10(content)[1] for _, content in _parts(r))
            == sorted(split_part10(archive[k])[1] for k in ("a1", "a2", "a3")))
    web_services.audit.flush()
    records = AuditQueryService(web_services.audit, web_services.policy).search(
        AUDITOR, AuditFilter(after_seq=start, limit=100))
    mine = [(rec.event.code, rec.action, rec.context.get("instances")) for rec in records
            if rec.requestor and rec.requestor.user_id == tech.user_id and rec.door == "dicomweb"]
    assert mine == [("110102", "R", 3), ("110104", "R", 3)]
