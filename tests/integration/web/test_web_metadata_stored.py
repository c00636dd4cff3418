"""WADO-RS metadata kept at ingest (instances.enc_metadata, revision 0002).

The metadata served from what ingest stored must be exactly what reading
the blob gives; a tampered sealed value is never served (audited, and the
blob answers instead); rows stored without it still answer; and no attribute
value can pass for a BulkDataURI marker.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select, update

from dicomvault.audit.models import AuditRecord
from dicomvault.dicomjson import dataset_to_json, encode_stored_metadata, render_stored_metadata
from dicomvault.index.models import Instance
from tests.integration.web.conftest import make_instance, multipart_body, stow_headers

CORPUS = Path(pydicom.data.__file__).parent / "test_files"
STUDY = "1.2.826.0.1.3680043.8.498.301"


@pytest.fixture
def tech(accounts):
    return accounts["technologist"]


def _store(client, auth, data: bytes):
    return client.post("/dicomweb/studies", content=multipart_body([data]),
                       headers={**auth, **stow_headers()})


def _metadata_url(data: bytes) -> str:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    return (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}/metadata")


def _forget_stored_metadata(services, sop_uid: str | None = None) -> None:
    stmt = update(Instance).values(enc_metadata=None)
    if sop_uid is not None:
        stmt = stmt.where(Instance.sop_uid == sop_uid)
    with services.session_factory() as s, s.begin():
        s.execute(stmt)


def test_stored_metadata_equals_metadata_read_from_the_blob_for_the_corpus(client, tech, web_services):
    served: dict[str, object] = {}
    for path in sorted(CORPUS.glob("*.dcm")):
        data = path.read_bytes()
        if len(data) > 1_500_000:  # the app under test limits bodies to 2 MB
            continue
        if _store(client, tech.auth, data).status_code != 200:
            continue  # refused objects (checked by the archive corpus test) have no metadata
        r = client.get(_metadata_url(data), headers=tech.auth)
        if r.status_code == 200:
            served[_metadata_url(data)] = r.json()
    assert len(served) >= 30
    with web_services.session_factory() as s:
        kept = s.execute(select(Instance.enc_metadata)).scalars().all()
    assert sum(1 for v in kept if v is not None) >= 30
    _forget_stored_metadata(web_services)
    for url, body in served.items():
        again = client.get(url, headers=tech.auth)
        assert again.status_code == 200
        fresh = again.json()[0]
        kept_item = body[0]  # type: ignore[index]
        differing = {k: (kept_item.get(k), fresh.get(k)) for k in set(kept_item) | set(fresh)
                     if kept_item.get(k) != fresh.get(k)}
        assert not differing, (url, differing)


def test_tampered_stored_metadata_is_audited_and_not_served(client, tech, web_services):
    data = make_instance(STUDY, f"{STUDY}.1", PatientName="DOE^JANE", StudyDescription="ORIGINAL")
    assert _store(client, tech.auth, data).status_code == 200
    sop = str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)
    with web_services.session_factory() as s, s.begin():
        sealed = s.execute(select(Instance.enc_metadata).where(Instance.sop_uid == sop)).scalar_one()
        flipped = bytearray(sealed)
        flipped[-20] ^= 0x01
        s.execute(update(Instance).where(Instance.sop_uid == sop).values(enc_metadata=bytes(flipped)))
    r = client.get(_metadata_url(data), headers=tech.auth)
    assert r.status_code == 200
    (item,) = r.json()
    assert item["00081030"]["Value"] == ["ORIGINAL"]  # from the verified blob, not the tampered value
    with web_services.session_factory() as s:
        alerts = s.execute(select(AuditRecord).where(AuditRecord.event_code == "110113")).scalars().all()
    assert alerts, "the failed integrity check is audited"


def test_instances_without_stored_metadata_still_answer(client, tech, web_services):
    data = make_instance(STUDY, f"{STUDY}.1", PatientName="DOE^JANE")
    assert _store(client, tech.auth, data).status_code == 200
    before = client.get(_metadata_url(data), headers=tech.auth).json()
    _forget_stored_metadata(web_services)
    after = client.get(_metadata_url(data), headers=tech.auth).json()
    assert after == before
    assert after[0]["7FE00010"]["BulkDataURI"].endswith("/bulkdata/7FE00010")


def test_no_attribute_value_passes_for_a_bulkdata_marker():
    ds = pydicom.dcmread(io.BytesIO(make_instance(STUDY, f"{STUDY}.1")))
    stored = encode_stored_metadata(ds)
    assert stored is not None
    # Whatever an attacker writes into a value, the marker of this instance is random.
    other = encode_stored_metadata(ds)
    assert other is not None and other != stored
    ds.StudyDescription = '":7FE00010 "0123456789abcdef0123456789abcdef:7FE00010'
    text = render_stored_metadata(encode_stored_metadata(ds) or b"", "https://h/x")
    assert '":7FE00010 "0123456789abcdef0123456789abcdef:7FE00010' in text.replace('\\"', '"')
    assert json.loads(text) == dataset_to_json(ds, lambda path: f"https://h/x/bulkdata/{path}")
    assert json.loads(text)["00081030"]["Value"][0].endswith("0123456789abcdef:7FE00010")
