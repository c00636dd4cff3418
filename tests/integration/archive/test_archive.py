"""Archive service end to end over real SQLite and PostgreSQL databases."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from dicomvault.errors import ConflictError, InvalidInputError, NotFoundError, TamperedError
from dicomvault.index.models import Instance, Patient, Study
from dicomvault.services.dicomfile import split_part10
from dicomvault.services.types import FindQuery
from tests.integration.conftest import make_principal

pytestmark = pytest.mark.integration
CORPUS = Path(pydicom.data.__file__).parent / "test_files"

PHI_TOKENS = {
    "PatientName": "Zqxwarden^Phineas^Quillon",
    "PatientID": "PHIID-7788-XQ",
    "PatientBirthDate": "19410307",
    "AccessionNumber": "ACCX99177",
    "StudyDescription": "Qwertyscan of the zylophone",
    "ReferringPhysicianName": "Drvbnmwick^Hortensia",
    "SeriesDescription": "Mnbvcxseries axial",
    "StudyID": "STUDYIDQQ91",
}


def make_instance(study_uid: str | None = None, series_uid: str | None = None, **attrs: str) -> bytes:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    for key, value in attrs.items():
        setattr(ds, key, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_corpus_each_file_stored_byte_identical_or_refused_with_reason(services, technologist):
    stored = refused = 0
    for path in sorted(CORPUS.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        try:
            result = services.archive.ingest(technologist, data, door="test")
        except InvalidInputError as exc:
            assert exc.detail and "Traceback" not in exc.detail
            refused += 1
            continue
        except ConflictError:
            refused += 1  # the corpus reuses some SOP Instance UIDs with different bytes
            continue
        stored += 1
        refs = services.archive.locate(technologist, "IMAGE", {
            "StudyInstanceUID": result.study_instance_uid,
            "SeriesInstanceUID": "", "SOPInstanceUID": result.sop_instance_uid}, door="test",
            purpose="test")
        ts, dataset_bytes = services.archive.read_dataset(refs[0])
        original_ts, original = split_part10(b"\0" * 128 + data[128:])
        assert ts == original_ts
        assert dataset_bytes == original, path.name
    assert stored >= 100 and refused >= 10


def test_duplicate_same_bytes_is_success_without_second_copy(services, technologist):
    data = make_instance()
    first = services.archive.ingest(technologist, data, door="test")
    blobs_before = sorted(services.store.keys())
    second = services.archive.ingest(technologist, data, door="test")
    assert (first.status, second.status) == ("stored", "duplicate")
    assert sorted(services.store.keys()) == blobs_before


def test_duplicate_different_bytes_refused_and_original_kept(services, technologist):
    data = make_instance(PatientName="Orig^Inal")
    first = services.archive.ingest(technologist, data, door="test")
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.StudyDescription = "changed"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(ConflictError):
        services.archive.ingest(technologist, buf.getvalue(), door="test")
    refs = services.archive.locate(technologist, "STUDY", {"StudyInstanceUID": first.study_instance_uid},
                                   door="test", purpose="test")
    assert services.archive.read_part10(refs[0])[128:] == data[128:]


def _with_changed_pixel(data: bytes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    pixels = bytearray(ds.PixelData)
    pixels[-1] ^= 0x01  # one bit of the last pixel: the header is unchanged
    ds.PixelData = bytes(pixels)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_duplicates_are_compared_byte_for_byte_with_the_stored_object(services, technologist):
    """New rows keep no content MAC (it is ""): a repeated SOP Instance UID is compared with
    the decrypted stored object, pixel data included, whichever door each copy came through."""
    data = make_instance()
    first = services.archive.ingest(technologist, data, door="test")
    with services.engine.connect() as conn:
        assert conn.execute(select(Instance.content_mac)).scalar_one() == ""
    ts, dataset = split_part10(data)
    again = services.archive.ingest(technologist, dataset, door="dimse", dataset_transfer_syntax=ts)
    assert (first.status, again.status) == ("stored", "duplicate")
    blobs = sorted(services.store.keys())
    with pytest.raises(ConflictError):
        services.archive.ingest(technologist, _with_changed_pixel(data), door="test")
    assert sorted(services.store.keys()) == blobs
    refs = services.archive.locate(technologist, "STUDY", {"StudyInstanceUID": first.study_instance_uid},
                                   door="test", purpose="test")
    assert services.archive.read_part10(refs[0])[128:] == data[128:]


def test_rows_with_a_content_mac_from_earlier_versions_still_deduplicate(services, technologist):
    import hashlib
    import hmac

    from sqlalchemy import update

    data = make_instance()
    services.archive.ingest(technologist, data, door="test")
    _ts, dataset = split_part10(data)
    mac = hmac.new(services.keyring.index_key, dataset, hashlib.sha256).hexdigest()
    with services.engine.begin() as conn:  # as an earlier version stored it
        conn.execute(update(Instance).values(content_mac=mac))
    assert services.archive.ingest(technologist, data, door="test").status == "duplicate"
    with services.engine.begin() as conn:  # a MAC that does not match: refused, not read
        conn.execute(update(Instance).values(content_mac="0" * 64))
    with pytest.raises(ConflictError):
        services.archive.ingest(technologist, data, door="test")


def test_a_tampered_stored_object_is_never_taken_for_a_duplicate(services, technologist):
    data = make_instance()
    services.archive.ingest(technologist, data, door="test")
    (key,) = list(services.store.keys())
    path = services.store.root / key
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(ConflictError):
        services.archive.ingest(technologist, data, door="test")
    assert list(services.store.keys()) == [key]


def test_overwrite_when_configured_replaces_object(settings_factory, keyring, technologist):
    from dicomvault.index.migrate import upgrade
    from dicomvault.services.context import build_services

    svc = build_services(settings_factory(DICOMVAULT_ARCHIVE__ON_DUPLICATE="overwrite"), keyring=keyring)
    upgrade(svc.engine)
    data = make_instance()
    svc.archive.ingest(technologist, data, door="test")
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.StudyDescription = "second version"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    assert svc.archive.ingest(technologist, buf.getvalue(), door="test").status == "overwritten"
    refs = svc.archive.locate(technologist, "STUDY", {"StudyInstanceUID": str(ds.StudyInstanceUID)},
                              door="test", purpose="test")
    assert len(refs) == 1 and len(list(svc.store.keys())) == 1
    assert svc.archive.read_part10(refs[0])[128:] == buf.getvalue()[128:]
    svc.close()


@pytest.mark.parametrize("mutilate", [
    lambda d: d[: len(d) // 2],                       # truncated
    lambda d: os.urandom(2048),                       # garbage
    lambda d: b"\0" * 128 + b"DICM" + os.urandom(300),  # garbage after the prefix
    lambda d: d[:200],                                # truncated inside the meta
])
def test_bad_input_refused_and_nothing_stored(services, technologist, mutilate):
    with pytest.raises(InvalidInputError):
        services.archive.ingest(technologist, mutilate(make_instance()), door="test")
    assert list(services.store.keys()) == []
    with services.session_factory() as s:
        assert s.execute(select(func.count(Instance.id))).scalar() == 0


def test_no_phi_token_in_plaintext_anywhere_under_data_folder(services, technologist, tmp_path):
    study = generate_uid()
    for _ in range(3):
        services.archive.ingest(technologist, make_instance(study_uid=study, **PHI_TOKENS), door="test")
    rows = services.archive.find(technologist, FindQuery("STUDY", {"PatientID": PHI_TOKENS["PatientID"]}),
                                 door="test").rows
    assert rows and rows[0]["PatientName"] == PHI_TOKENS["PatientName"]
    services.close()
    needles = set()
    for value in PHI_TOKENS.values():
        for part in value.replace("^", " ").split():
            if len(part) >= 6:
                needles.update({part.encode(), part.upper().encode(), part.encode("utf-16-le")})
    found = []
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            found += [(path.name, n) for n in needles if n in blob]
    assert found == []


def test_tampered_blob_detected_never_served_and_alerted(services, technologist):
    result = services.archive.ingest(technologist, make_instance(), door="test")
    refs = services.archive.locate(technologist, "STUDY", {"StudyInstanceUID": result.study_instance_uid},
                                   door="test", purpose="test")
    path = services.settings.blob_root / refs[0].blob_key
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(TamperedError):
        services.archive.read_part10(refs[0])
    report = services.archive.fixity_check()
    assert report.bad == [result.sop_instance_uid]
    from dicomvault.audit.models import AuditRecord

    with services.session_factory() as s:
        alerts = s.execute(select(AuditRecord).where(AuditRecord.event_code == "110113")).scalars().all()
    assert len(alerts) >= 2


def _find(services, principal, level, **filters):
    return services.archive.find(principal, FindQuery(level, filters), door="test").rows


def test_find_matching_rules(services, technologist):
    s1, s2 = generate_uid(), generate_uid()
    services.archive.ingest(technologist, make_instance(
        s1, PatientName="Smith^John", PatientID="PID1", StudyDate="20200105", AccessionNumber="ACC100",
        StudyDescription="CT Chest with contrast"), door="test")
    services.archive.ingest(technologist, make_instance(
        s2, PatientName="Smythe^Jane", PatientID="PID2", StudyDate="20210610", AccessionNumber="ACC200",
        StudyDescription="Head CT"), door="test")
    uids = lambda rows: sorted(r["StudyInstanceUID"] for r in rows)  # noqa: E731
    assert uids(_find(services, technologist, "STUDY", PatientID="PID1")) == [s1]
    assert uids(_find(services, technologist, "STUDY", PatientName="SMITH*")) == [s1]
    assert uids(_find(services, technologist, "STUDY", PatientName="sm*")) == sorted([s1, s2])
    assert uids(_find(services, technologist, "STUDY", PatientName="*jane*")) == [s2]
    assert uids(_find(services, technologist, "STUDY", PatientName="Sm?th^John")) == [s1]
    assert uids(_find(services, technologist, "STUDY", StudyDate="20200101-20201231")) == [s1]
    assert uids(_find(services, technologist, "STUDY", StudyDate="20210101-")) == [s2]
    assert uids(_find(services, technologist, "STUDY", StudyDate="-20200105")) == [s1]
    assert uids(_find(services, technologist, "STUDY", AccessionNumber="ACC*")) == sorted([s1, s2])
    assert uids(_find(services, technologist, "STUDY", StudyDescription="*chest*")) == [s1]
    assert uids(_find(services, technologist, "STUDY", StudyInstanceUID=f"{s1}\\{s2}")) == sorted([s1, s2])
    assert uids(_find(services, technologist, "STUDY", ModalitiesInStudy="CT")) == sorted([s1, s2])
    assert uids(_find(services, technologist, "STUDY", ModalitiesInStudy="MR")) == []
    assert uids(_find(services, technologist, "STUDY", PatientID="PID")) == []
    patients = _find(services, technologist, "PATIENT", PatientName="*")
    assert sorted(p["PatientID"] for p in patients) == ["PID1", "PID2"]
    assert all(p["NumberOfPatientRelatedStudies"] == 1 for p in patients)
    series = _find(services, technologist, "SERIES", StudyInstanceUID=s1)
    assert len(series) == 1 and series[0]["Modality"] == "CT"
    images = _find(services, technologist, "IMAGE", StudyInstanceUID=s1)
    assert len(images) == 1 and images[0]["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.2"



def test_find_reuses_one_statement_per_query_form(services, technologist):
    """Queries of one form share a cached statement; each still matches its own values."""
    from dicomvault.services.query import _cached_statement

    uids = {}
    for pid, date, time in (("FORM1", "20220301", "081500"), ("FORM2", "20220402", "161000")):
        uids[pid] = generate_uid()
        services.archive.ingest(technologist, make_instance(uids[pid], PatientID=pid, StudyDate=date,
                                                            StudyTime=time, Modality="CT"), door="test")
    before = _cached_statement.cache_info()
    for pid, dates, times in (("FORM1", "20220301-20220310", "0800-0900"),
                              ("FORM2", "20220401-20220410", "1600-1700")):
        rows = _find(services, technologist, "STUDY", PatientID=pid, StudyDate=dates, StudyTime=times)
        assert [r["StudyInstanceUID"] for r in rows] == [uids[pid]]
        assert _find(services, technologist, "STUDY", PatientID=pid, StudyDate=dates, StudyTime="1200-1300") == []
    after = _cached_statement.cache_info()
    assert after.hits - before.hits >= 2 and after.misses - before.misses <= 1

@pytest.mark.parametrize("filters", [
    {"StudyDate": "2020-01-01"}, {"StudyDate": "yesterday"}, {"StudyInstanceUID": "1.2.abc"},
    {"StudyInstanceUID": "'; DROP TABLE studies; --"}, {"SeriesNumber": "x"}, {"StudyTime": "25x"},
    {"PatientName": "A" * 5000},
])
def test_find_bad_parameters_refused(services, technologist, filters):
    with pytest.raises(InvalidInputError):
        services.archive.find(technologist, FindQuery("SERIES", filters), door="test")


def test_find_limit_offset_and_cap(services, technologist):
    for _ in range(5):
        services.archive.ingest(technologist, make_instance(PatientID="P"), door="test")
    page1 = services.archive.find(technologist, FindQuery("STUDY", {}, limit=2), door="test")
    page2 = services.archive.find(technologist, FindQuery("STUDY", {}, limit=2, offset=2), door="test")
    page3 = services.archive.find(technologist, FindQuery("STUDY", {}, limit=2, offset=4), door="test")
    assert len(page1.rows) == 2 and page1.capped and len(page3.rows) == 1 and not page3.capped
    seen = [r["StudyInstanceUID"] for r in page1.rows + page2.rows + page3.rows]
    assert len(set(seen)) == 5


def test_referring_sees_only_assigned_and_gets_not_found(services, technologist):
    referring = make_principal("referring", "dr-who")
    services.archive.ingest(technologist, make_instance(PatientID="P9"), door="test")
    assert _find(services, referring, "STUDY") == []
    assert _find(services, referring, "PATIENT") == []
    study = _find(services, technologist, "STUDY")[0]["StudyInstanceUID"]
    with pytest.raises(NotFoundError):
        services.archive.locate(referring, "STUDY", {"StudyInstanceUID": study}, door="test", purpose="t")


def test_admin_cannot_read_pixels_or_search(services, technologist):
    from dicomvault.errors import ForbiddenError

    admin = make_principal("admin")
    result = services.archive.ingest(technologist, make_instance(), door="test")
    with pytest.raises((ForbiddenError, NotFoundError)):
        services.archive.locate(admin, "STUDY", {"StudyInstanceUID": result.study_instance_uid},
                                door="test", purpose="t")
    with pytest.raises((ForbiddenError, NotFoundError)):
        services.archive.find(admin, FindQuery("STUDY", {}), door="test")
    with pytest.raises((ForbiddenError, NotFoundError)):
        services.archive.ingest(admin, make_instance(), door="test")


def test_delete_study_removes_rows_and_blobs(services, technologist):
    officer = make_principal("privacy-officer")
    study = generate_uid()
    for _ in range(2):
        services.archive.ingest(technologist, make_instance(study), door="test")
    assert services.archive.delete_study(officer, study, door="test") == 2
    assert list(services.store.keys()) == []
    with services.session_factory() as s:
        assert s.execute(select(func.count(Study.id))).scalar() == 0
        assert s.execute(select(func.count(Patient.id))).scalar() == 1


def test_orphan_blob_swept(services, technologist):
    with services.store.write("ab/orphan.dvb") as w:
        w.write(b"partial")
    services.archive.ingest(technologist, make_instance(), door="test")
    assert services.archive.sweep_orphan_blobs() == 1
    assert len(list(services.store.keys())) == 1


def test_no_phi_token_in_any_database_column(services, technologist):
    """Every row of every table, on both backends (PostgreSQL keeps its files elsewhere)."""
    from sqlalchemy import MetaData

    services.archive.ingest(technologist, make_instance(**PHI_TOKENS), door="test")
    services.archive.find(technologist, FindQuery("STUDY", {"PatientName": "Zqx*"}), door="test")
    needles = [p.lower() for v in PHI_TOKENS.values() for p in v.replace("^", " ").split() if len(p) >= 6]
    meta = MetaData()
    meta.reflect(services.engine)
    hits = []
    with services.engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(table.select()):
                text = " ".join(
                    v.decode("latin-1") if isinstance(v, bytes | memoryview) and not isinstance(v, memoryview)
                    else bytes(v).decode("latin-1") if isinstance(v, memoryview) else str(v)
                    for v in row
                ).lower()
                hits += [(table.name, n) for n in needles if n in text]
    assert hits == []
