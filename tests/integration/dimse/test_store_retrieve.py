"""C-STORE, C-FIND, C-GET, C-MOVE through the door (PS3.4 B, C.4.1-C.4.3)."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from tests.integration.dimse.scu import QR_CONTEXTS, connect, get_roles, make_ct, store_bytes

pytestmark = pytest.mark.integration

STUDY = generate_uid()
SERIES = generate_uid()
PATIENTS = [
    # (PatientName, PatientID, StudyDate, Modality, AccessionNumber)
    ("SMITH^JOHN", "PID001", "20200115", "CT", "ACC1"),
    ("SMYTHE^ANNA", "PID002", "20210601", "CT", "ACC2"),
    ("JONES^MARY", "PID003", "20221231", "CT", "ACC3"),
]


def _store_patients(door) -> dict[str, tuple[Dataset, bytes]]:
    stored = {}
    assoc = connect(door, contexts=[build_context(CTImageStorage, [ExplicitVRLittleEndian])])
    assert assoc.is_established
    for name, pid, date, modality, acc in PATIENTS:
        ds, data = make_ct(PatientName=name, PatientID=pid, StudyDate=date, Modality=modality,
                           AccessionNumber=acc)
        assert store_bytes(assoc, ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian,
                           data) == 0x0000
        stored[pid] = (ds, data)
    assoc.release()
    return stored


def _find(door, model, **keys) -> tuple[list[Dataset], int]:
    query = Dataset()
    for key, value in keys.items():
        setattr(query, key, value)
    assoc = connect(door)
    rows, final = [], -1
    for status, identifier in assoc.send_c_find(query, model):
        if status.Status in (0xFF00, 0xFF01):
            rows.append(identifier)
        else:
            final = status.Status
    assoc.release()
    return rows, final


# (model, keys) -> expected PatientIDs
FIND_CASES = [
    (PatientRootQueryRetrieveInformationModelFind,
     {"QueryRetrieveLevel": "PATIENT", "PatientID": "PID001", "PatientName": ""}, {"PID001"}),
    (PatientRootQueryRetrieveInformationModelFind,
     {"QueryRetrieveLevel": "PATIENT", "PatientName": "SM*", "PatientID": ""},
     {"PID001", "PID002"}),
    (StudyRootQueryRetrieveInformationModelFind,
     {"QueryRetrieveLevel": "STUDY", "StudyDate": "20200101-20211231", "PatientID": ""},
     {"PID001", "PID002"}),
    (StudyRootQueryRetrieveInformationModelFind,
     {"QueryRetrieveLevel": "STUDY", "StudyDate": "20220101-", "PatientID": ""}, {"PID003"}),
    (StudyRootQueryRetrieveInformationModelFind,
     {"QueryRetrieveLevel": "STUDY", "AccessionNumber": "ACC2", "PatientID": "",
      "StudyInstanceUID": ""}, {"PID002"}),
    (StudyRootQueryRetrieveInformationModelFind,
     {"QueryRetrieveLevel": "STUDY", "PatientName": "jones^mary", "PatientID": ""}, {"PID003"}),
    (StudyRootQueryRetrieveInformationModelFind,
     {"QueryRetrieveLevel": "STUDY", "PatientID": "", "ModalitiesInStudy": "CT"},
     {"PID001", "PID002", "PID003"}),
]


@pytest.mark.parametrize(("model", "keys", "expected"), FIND_CASES)
def test_find_matches_expected_patients(door, model, keys, expected):
    _store_patients(door)
    rows, final = _find(door, model, **keys)
    assert final == 0x0000
    assert {str(r.PatientID) for r in rows} == expected


def test_find_series_and_image_levels_return_requested_keys(door):
    stored = _store_patients(door)
    ds = stored["PID001"][0]
    rows, final = _find(door, StudyRootQueryRetrieveInformationModelFind,
                        QueryRetrieveLevel="SERIES", StudyInstanceUID=ds.StudyInstanceUID,
                        SeriesInstanceUID="", Modality="", SeriesNumber="")
    assert final == 0 and len(rows) == 1
    assert rows[0].SeriesInstanceUID == ds.SeriesInstanceUID and rows[0].Modality == "CT"
    rows, final = _find(door, PatientRootQueryRetrieveInformationModelFind,
                        QueryRetrieveLevel="IMAGE", PatientID="PID001",
                        StudyInstanceUID=ds.StudyInstanceUID,
                        SeriesInstanceUID=ds.SeriesInstanceUID, SOPInstanceUID="",
                        SOPClassUID="")
    assert final == 0 and [r.SOPInstanceUID for r in rows] == [ds.SOPInstanceUID]
    assert rows[0].SOPClassUID == CTImageStorage


def test_find_with_bad_level_answers_a900(door):
    rows, final = _find(door, StudyRootQueryRetrieveInformationModelFind,
                        QueryRetrieveLevel="PATIENT", PatientID="")
    assert rows == [] and final == 0xA900


def test_store_same_instance_twice_succeeds_once_stored(door):
    ds, data = make_ct()
    assoc = connect(door, contexts=[build_context(CTImageStorage, [ExplicitVRLittleEndian])])
    assert store_bytes(assoc, ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian,
                       data) == 0
    assert store_bytes(assoc, ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian,
                       data) == 0
    assoc.release()


def test_store_different_object_same_uid_refused_c011(door):
    ds, data = make_ct()
    # The same SOP Instance UID (and study) with different content.
    _ds2, data2 = make_ct(PatientName="OTHER^ONE", SOPInstanceUID=ds.SOPInstanceUID,
                          StudyInstanceUID=ds.StudyInstanceUID, SeriesInstanceUID=ds.SeriesInstanceUID)
    assert data2 != data
    assoc = connect(door, contexts=[build_context(CTImageStorage, [ExplicitVRLittleEndian])])
    assert store_bytes(assoc, ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian,
                       data) == 0
    assert store_bytes(assoc, ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian,
                       data2) == 0xC011
    assoc.release()


def test_storage_contexts_refused_for_ae_without_store_or_get(door):
    assoc = connect(door, ae_title="DEST", client="dest",
                    contexts=[build_context(CTImageStorage, [ExplicitVRLittleEndian])])
    assert not assoc.is_established and not assoc.is_rejected  # no context accepted


def test_store_answers_0124_for_ae_allowed_get_but_not_store(door):
    ds, data = make_ct()
    assoc = connect(door, ae_title="GETONLY",
                    contexts=[build_context(CTImageStorage, [ExplicitVRLittleEndian])])
    assert assoc.is_established
    assert store_bytes(assoc, ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian,
                       data) == 0x0124
    assoc.release()
    rows, final = _find(door, StudyRootQueryRetrieveInformationModelFind,
                        QueryRetrieveLevel="STUDY", StudyInstanceUID=ds.StudyInstanceUID)
    assert final == 0 and rows == []


@pytest.mark.parametrize("level_keys", [
    {"QueryRetrieveLevel": "STUDY"},
    {"QueryRetrieveLevel": "SERIES"},
    {"QueryRetrieveLevel": "IMAGE"},
])
@pytest.mark.parametrize("model", [StudyRootQueryRetrieveInformationModelGet,
                                   PatientRootQueryRetrieveInformationModelGet])
def test_get_returns_stored_bytes_identical(door, model, level_keys):
    ds, data = make_ct(encoding=ImplicitVRLittleEndian)
    assoc = connect(door, contexts=[build_context(CTImageStorage, [ImplicitVRLittleEndian])])
    assert store_bytes(assoc, ds.SOPClassUID, ds.SOPInstanceUID, ImplicitVRLittleEndian,
                       data) == 0
    assoc.release()

    received: dict[str, tuple[str, bytes]] = {}

    def on_store(event):
        received[str(event.request.AffectedSOPInstanceUID)] = (
            str(event.context.transfer_syntax), event.request.DataSet.getvalue())
        return 0

    from pynetdicom import evt

    query = Dataset()
    query.QueryRetrieveLevel = level_keys["QueryRetrieveLevel"]
    query.PatientID = ds.PatientID
    query.StudyInstanceUID = ds.StudyInstanceUID
    if query.QueryRetrieveLevel in ("SERIES", "IMAGE"):
        query.SeriesInstanceUID = ds.SeriesInstanceUID
    if query.QueryRetrieveLevel == "IMAGE":
        query.SOPInstanceUID = ds.SOPInstanceUID
    contexts = [build_context(c) for c in QR_CONTEXTS]
    contexts.append(build_context(CTImageStorage, [ImplicitVRLittleEndian]))
    assoc = connect(door, contexts=contexts, roles=get_roles([CTImageStorage]))
    assoc.bind(evt.EVT_C_STORE, on_store)
    final = [s.Status for s, _ in assoc.send_c_get(query, model)][-1]
    assoc.release()
    assert final == 0x0000
    assert received == {ds.SOPInstanceUID: (ImplicitVRLittleEndian, data)}


@pytest.mark.parametrize("model", [StudyRootQueryRetrieveInformationModelMove,
                                   PatientRootQueryRetrieveInformationModelMove])
def test_move_to_configured_tls_destination_sends_bytes_identical(door, receiver, model):
    ds, data = make_ct()
    assoc = connect(door, contexts=[build_context(CTImageStorage, [ExplicitVRLittleEndian])])
    assert store_bytes(assoc, ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian,
                       data) == 0
    assoc.release()
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = ds.PatientID
    query.StudyInstanceUID = ds.StudyInstanceUID
    assoc = connect(door)
    responses = [s for s, _ in assoc.send_c_move(query, "DEST", model)]
    assoc.release()
    assert responses[-1].Status == 0x0000
    assert responses[-1].NumberOfCompletedSuboperations == 1
    assert receiver.received == {ds.SOPInstanceUID: (ExplicitVRLittleEndian, data)}
    assert receiver.originators == {ds.SOPInstanceUID: "SCU"}  # the C-MOVE requestor


@pytest.mark.parametrize("destination", ["NOWHERE", "STOREONLY", "SCU"])
def test_move_to_unknown_or_unpermitted_destination_answers_a801(door, receiver, destination):
    ds, data = make_ct()
    assoc = connect(door, contexts=[build_context(CTImageStorage, [ExplicitVRLittleEndian])])
    assert store_bytes(assoc, ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian,
                       data) == 0
    assoc.release()
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ds.StudyInstanceUID
    assoc = connect(door)
    responses = [s for s, _ in assoc.send_c_move(query, destination,
                                                 StudyRootQueryRetrieveInformationModelMove)]
    assoc.release()
    assert responses[-1].Status == 0xA801
    assert receiver.received == {}


def test_move_with_no_match_succeeds_with_zero_suboperations(door, receiver):
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = generate_uid()
    assoc = connect(door)
    responses = [s for s, _ in assoc.send_c_move(query, "DEST",
                                                 StudyRootQueryRetrieveInformationModelMove)]
    assoc.release()
    assert responses[-1].Status == 0x0000
    assert responses[-1].get("NumberOfCompletedSuboperations", 0) == 0


def test_phi_values_never_logged_during_store_and_find(door, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    name, pid = "Zqxlogcheck^Phineas", "PHILOG-7788"
    ds, data = make_ct(PatientName=name, PatientID=pid)
    assoc = connect(door, contexts=[build_context(CTImageStorage, [ExplicitVRLittleEndian])])
    assert store_bytes(assoc, ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian,
                       data) == 0
    assoc.release()
    rows, final = _find(door, PatientRootQueryRetrieveInformationModelFind,
                        QueryRetrieveLevel="PATIENT", PatientName="Zqxlog*", PatientID="")
    assert final == 0 and [str(r.PatientID) for r in rows] == [pid]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert caplog.records
    assert "Zqxlog" not in logged and "PHILOG" not in logged
