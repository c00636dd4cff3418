"""The Python ``dicomweb-client`` (a real client) against dicomvault over HTTPS with a personal token.

Stores a study (STOW in batches, chunked transfer encoding above 1 MB), searches it at every
level (wildcards, date ranges, includefield, limit/offset with ``get_remaining``) and
retrieves it end to end (study, series, instance, metadata, frames, rendered).
"""

from __future__ import annotations

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

pytestmark = pytest.mark.interop

STUDY = "1.2.826.0.1.3680043.8.498.900"
SERIES = [f"{STUDY}.1", f"{STUDY}.2"]


def _datasets(count: int = 30) -> list[pydicom.Dataset]:
    out = []
    for i in range(count):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, SERIES[i % 2]
        ds.PatientName, ds.PatientID, ds.StudyDate = "INTEROP^ALICE", "IOP-1", "20230615"
        ds.InstanceNumber = i + 1
        out.append(ds)
    return out


@pytest.fixture
def client(https_server):
    token = https_server.token("technologist")
    return DICOMwebClient(f"{https_server.url}/dicomweb", session=https_server.session(token))


@pytest.fixture
def stored(client) -> list[pydicom.Dataset]:
    datasets = _datasets()
    try:
        result = client.store_instances(datasets)  # ~1.2 MB: sent with chunked transfer encoding
    except requests.HTTPError as exc:
        pytest.fail(f"STOW refused: {exc.response.status_code} {exc.response.text}")
    assert len(result.ReferencedSOPSequence) == len(datasets)
    assert "FailedSOPSequence" not in result
    return datasets


def test_store_search_retrieve_end_to_end(client, stored):
    studies = client.search_for_studies(search_filters={"PatientID": "IOP-1"})
    assert [s["0020000D"]["Value"][0] for s in studies] == [STUDY]
    assert studies[0]["00201208"]["Value"] == [len(stored)]
    retrieved = client.retrieve_study(STUDY)
    assert len(retrieved) == len(stored)
    by_uid = {ds.SOPInstanceUID: ds for ds in stored}
    for ds in retrieved:
        original = by_uid[ds.SOPInstanceUID]
        assert ds.PixelData == original.PixelData and ds.PatientName == "INTEROP^ALICE"


@pytest.mark.parametrize(("filters", "fuzzy", "expected"), [
    ({"PatientName": "INTEROP*"}, False, 1),
    ({"PatientName": "*ALICE*"}, False, 1),
    ({"PatientName": "NOBODY*"}, False, 0),
    ({"StudyDate": "20230101-20231231"}, False, 1),
    ({"StudyDate": "20240101-"}, False, 0),
    ({"PatientID": "IOP-1"}, True, 1),
])
def test_search_studies_matching(client, stored, filters, fuzzy, expected):
    assert len(client.search_for_studies(search_filters=filters, fuzzymatching=fuzzy)) == expected


def test_search_series_and_instances_with_includefield(client, stored):
    series = client.search_for_series(STUDY, fields=["PatientName"])
    assert sorted(s["0020000E"]["Value"][0] for s in series) == SERIES
    assert series[0]["00100010"]["Value"] == [{"Alphabetic": "INTEROP^ALICE"}]
    instances = client.search_for_instances(STUDY, SERIES[0])
    assert len(instances) == len(stored) // 2
    everything = client.search_for_instances(search_filters={"PatientID": "IOP-1"})
    assert len(everything) == len(stored)


def test_limit_offset_and_get_remaining(client, stored):
    page = client.search_for_instances(STUDY, limit=7, offset=3)
    assert len(page) == 7
    remaining = client.search_for_instances(STUDY, limit=4, get_remaining=True)
    uids = [i["00080018"]["Value"][0] for i in remaining]
    assert len(uids) == len(stored) == len(set(uids))


def test_retrieve_series_instance_metadata_frames_rendered(client, stored):
    ds = stored[0]
    series = client.retrieve_series(STUDY, ds.SeriesInstanceUID)
    assert len(series) == len(stored) // 2
    instance = client.retrieve_instance(STUDY, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert instance.SOPInstanceUID == ds.SOPInstanceUID
    meta = client.retrieve_study_metadata(STUDY)
    assert len(meta) == len(stored)
    assert all("BulkDataURI" in m["7FE00010"] for m in meta)
    bulk = client.retrieve_bulkdata(meta[0]["7FE00010"]["BulkDataURI"])
    assert len(bulk[0]) == len(ds.PixelData)
    frames = client.retrieve_instance_frames(STUDY, ds.SeriesInstanceUID, ds.SOPInstanceUID, [1])
    assert frames[0] == ds.PixelData
    jpeg = client.retrieve_instance_rendered(STUDY, ds.SeriesInstanceUID, ds.SOPInstanceUID,
                                             media_types=("image/jpeg",))
    assert jpeg[:2] == b"\xff\xd8"


def test_partial_store_reports_failed_instance(client, stored):
    good = _datasets(1)[0]
    clash = stored[0].copy()
    clash.InstanceNumber = 999  # different bytes under an existing SOP Instance UID
    result = client.store_instances([good, clash])
    assert len(result.ReferencedSOPSequence) == 1
    assert result.FailedSOPSequence[0].ReferencedSOPInstanceUID == clash.SOPInstanceUID


def test_without_token_the_client_gets_401(https_server, stored):
    session = requests.Session()
    session.trust_env = False
    session.verify = str(https_server.ca)
    anonymous = DICOMwebClient(f"{https_server.url}/dicomweb", session=session)
    with pytest.raises(requests.HTTPError) as info:
        anonymous.search_for_studies()
    assert info.value.response.status_code == 401
