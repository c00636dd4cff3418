"""Issue 4: one action through each door, and exactly the expected audit records.

DIMSE (C-STORE, C-FIND, C-MOVE) over mutual TLS, DICOMweb (STOW, QIDO,
WADO), the login flow (login, failed login, MFA failure), an admin user
change, a de-identified export and a delete — all against one archive.  For
each action the records appended to the chain are read back and compared
with the PS3.15 A.5.3 event IDs, action codes, outcomes, doors, requestors
and participant objects the action must produce; the chain still verifies.
"""

from __future__ import annotations

from collections import Counter

import pyotp
import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import build_context
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicomvault.access.principal import system_principal
from dicomvault.access.tokens import permissions_of
from dicomvault.deid.profile import build_config
from dicomvault.web.app import create_app
from tests.integration.conftest import make_principal
from tests.integration.dimse.scu import connect, make_ct, store_bytes
from tests.integration.web.conftest import make_instance, multipart_body, stow_headers

pytestmark = pytest.mark.integration

STORE, ACCESSED, BEGIN, TRANSFERRED, DELETED, EXPORT, QUERY, ALERT, LOGIN = (
    "110104", "110103", "110102", "110104", "110105", "110106", "110112", "110113", "110114")


class Chain:
    """Reads the records each step appends."""

    def __init__(self, services) -> None:
        self.services = services
        self.seen = services.audit.head()[0]

    def new(self):
        head = self.services.audit.head()[0]
        records = [self.services.audit.get(seq) for seq in range(self.seen + 1, head + 1)]
        self.seen = head
        return records


def codes(records) -> Counter:
    return Counter((r.event.code, r.action, r.outcome == 0) for r in records)


def study_uids(record) -> set[str]:
    return {o.object_id for o in record.objects if o.id_type.code == "110180"}


def _move_identifier(study_uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study_uid
    return ds


def test_every_door_produces_exactly_the_expected_audit_records(door, receiver):
    services = door.services
    chain = Chain(services)

    # -- DIMSE C-STORE: Instances Transferred (110104) action C, requestor = the AE, patient + study
    ds, data = make_ct(PatientID="DOOR-PID-1", PatientName="Doors^Alice")
    assoc = connect(door, contexts=[build_context(CTImageStorage, [ExplicitVRLittleEndian]),
                                    build_context(StudyRootQueryRetrieveInformationModelFind),
                                    build_context(StudyRootQueryRetrieveInformationModelMove)])
    assert store_bytes(assoc, ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian, data) == 0
    records = chain.new()
    # The association itself: Security Alert / Node Authentication (110126), success.
    assert codes(records) == Counter({(STORE, "C", True): 1, (ALERT, "E", True): 1})
    node_auth = next(r for r in records if r.event.code == ALERT)
    assert [t.code for t in node_auth.types] == ["110126"]
    rec = next(r for r in records if r.event.code == STORE)
    assert rec.door == "dimse" and rec.requestor.user_id == "ae:SCU"
    assert study_uids(rec) == {ds.StudyInstanceUID}
    patient = next(o for o in rec.objects if o.type_role == 1)
    assert patient.patient_id == "DOOR-PID-1" and patient.patient_name == "Doors^Alice"

    # -- DIMSE C-FIND: Query (110112), the query as participant (PHI values as blind tokens)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = "DOOR-PID-1"
    query.StudyInstanceUID = ""
    results = [identifier for status, identifier in
               assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind) if identifier]
    assert len(results) == 1
    records = chain.new()
    assert codes(records) == Counter({(QUERY, "E", True): 1})
    query_obj = next(o for o in records[0].objects if o.type_role == 24)
    assert b"DOOR-PID-1" not in query_obj.query and b"blind:" in query_obj.query

    # -- DIMSE C-MOVE to DEST: Begin Transferring (110102) then Instances Transferred (110104, R)
    statuses = [status.Status for status, _ in
                assoc.send_c_move(_move_identifier(ds.StudyInstanceUID), "DEST",
                                  StudyRootQueryRetrieveInformationModelMove)]
    assert statuses[-1] == 0x0000 and ds.SOPInstanceUID in receiver.received
    records = chain.new()
    assert codes(records) == Counter({(BEGIN, "R", True): 1, (TRANSFERRED, "R", True): 1})
    assert all(study_uids(r) == {ds.StudyInstanceUID} and r.door == "dimse" for r in records)
    assoc.release()

    with TestClient(create_app(services), base_url="https://testserver") as client:
        operator = system_principal("cli")

        radiologist = services.identity.create_user(operator, "door-rad", {"radiologist"})
        token = services.identity.create_api_token(operator, radiologist.user_id, "t",
                                                   permissions_of({"radiologist"}), 1).token
        auth = {"Authorization": f"Bearer {token}"}
        chain.new()  # account set-up records (user created) are not part of the door actions

        # -- STOW-RS: 110104 C from the dicomweb door
        study2 = generate_uid()
        body = multipart_body([make_instance(study2, PatientID="DOOR-PID-2")])
        r = client.post("/dicomweb/studies", content=body, headers={**auth, **stow_headers()})
        assert r.status_code == 200, r.text
        records = chain.new()
        assert codes(records) == Counter({(STORE, "C", True): 1})
        assert records[0].door == "dicomweb" and records[0].requestor.user_id == radiologist.user_id

        # -- QIDO-RS: 110112
        r = client.get("/dicomweb/studies", params={"PatientID": "DOOR-PID-2"}, headers=auth)
        assert r.status_code == 200 and len(r.json()) == 1
        records = chain.new()
        assert codes(records) == Counter({(QUERY, "E", True): 1})

        # -- WADO-RS study retrieve: 110102 + 110104 R
        r = client.get(f"/dicomweb/studies/{study2}", headers={**auth, "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
        assert r.status_code == 200
        records = chain.new()
        assert codes(records)[(TRANSFERRED, "R", True)] == 1
        assert set(codes(records)) <= {(BEGIN, "R", True), (TRANSFERRED, "R", True)}
        assert all(study2 in study_uids(r) for r in records)

        # -- login (success), failed login, MFA failure: 110114 with outcomes
        user = services.identity.create_user(operator, "door-tech", {"technologist"})
        chain.new()
        r = client.post("/api/auth/login", json={"username": "door-tech", "password": "wrong-password-123"})
        assert r.status_code == 401
        records = chain.new()
        assert codes(records) == Counter({(LOGIN, "E", False): 1})
        r = client.post("/api/auth/login", json={"username": "door-tech", "password": user.one_time_password})
        challenge = r.json()["challenge"]
        r = client.post("/api/auth/password/initial", json={"challenge": challenge,
                                                             "new_password": "Correct-Horse-Battery-9"})
        challenge = r.json()["challenge"]
        enrol = client.post("/api/auth/mfa/enrol", json={"challenge": challenge}).json()
        bad = client.post("/api/auth/mfa/enrol/confirm", json={"challenge": challenge, "code": "000000"})
        assert bad.status_code in (400, 401)
        records = chain.new()
        assert (LOGIN, "E", False) in codes(records)
        ok = client.post("/api/auth/mfa/enrol/confirm",
                         json={"challenge": challenge, "code": pyotp.TOTP(enrol["secret"]).now()})
        assert ok.status_code == 200, ok.text
        records = chain.new()
        assert codes(records)[(LOGIN, "E", True)] >= 1
        login = next(r for r in records if r.event.code == LOGIN and r.outcome == 0)
        assert login.requestor.user_id == user.user_id and login.door in ("ui", "rest", "dicomweb")

    # -- user change (admin): Security Alert 110113 with a security event type
    admin = make_principal("admin")
    services.identity.set_roles(admin, "door-tech", {"technologist", "referring"})
    records = chain.new()
    assert [r.event.code for r in records] == [ALERT]
    assert records[0].types and records[0].types[0].code in ("110136", "110137")

    # -- de-identified export: Data Export 110106 (plus the collection's own stores)
    rad = make_principal("radiologist")
    services.deid_export.export(rad, [ds.StudyInstanceUID], build_config(project="DOORS", ocr=False), door="rest")
    records = chain.new()
    exports = [r for r in records if r.event.code == EXPORT]
    assert len(exports) == 1 and study_uids(exports[0]) == {ds.StudyInstanceUID}
    assert exports[0].requestor.user_id == rad.id

    # -- delete: DICOM Study Deleted 110105 action D
    officer = make_principal("privacy-officer")
    services.archive.delete_study(officer, study2, door="rest")
    records = chain.new()
    assert codes(records) == Counter({(DELETED, "D", True): 1})
    assert study_uids(records[0]) == {study2}

    report = services.audit.verify()
    assert report.ok

