"""C-FIND responses written by ``wire.py`` equal pydicom's and pynetdicom's encoding of the same match."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom.dimse_messages import C_FIND_RSP, C_STORE_RSP
from pynetdicom.dimse_primitives import C_FIND, C_STORE
from pynetdicom.dsutils import decode, encode

from dicomvault.dimse.handlers.find import row_dataset, translate_identifier
from dicomvault.dimse.wire import C_FIND_RSP as FIND_RSP
from dicomvault.dimse.wire import C_STORE_RSP as STORE_RSP
from dicomvault.dimse.wire import IdentifierLayout, message_pdus, response_command

STUDY_ROOT = "1.2.840.10008.5.1.4.1.2.2.1"


def _identifier(level: str, charset: str | None = None, **keys: object) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    if charset is not None:
        ds.SpecificCharacterSet = charset
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


STUDY_KEYS = dict(PatientID="", PatientName="", PatientBirthDate="", PatientSex="",
                  StudyInstanceUID="", StudyDate="", StudyTime="", AccessionNumber="",
                  StudyDescription="", ModalitiesInStudy="", NumberOfStudyRelatedInstances="",
                  NumberOfStudyRelatedSeries="", ReferringPhysicianName="", StudyID="")
STUDY_ROW = {"PatientID": "PID-1", "PatientName": "DOE^JANE", "PatientBirthDate": "19700101",
             "PatientSex": "F", "StudyInstanceUID": "1.2.3.45", "StudyDate": "20240102",
             "StudyTime": "101500", "AccessionNumber": "ACC1", "StudyDescription": "CT HEAD",
             "ModalitiesInStudy": ["CT", "SR"], "NumberOfStudyRelatedInstances": 101,
             "NumberOfStudyRelatedSeries": 2, "ReferringPhysicianName": None, "StudyID": "7"}
IMAGE_KEYS = dict(StudyInstanceUID="1.2.3", SeriesInstanceUID="", SOPInstanceUID="",
                  SOPClassUID="", InstanceNumber="", NumberOfFrames="", Rows=None)
IMAGE_ROW = {"StudyInstanceUID": "1.2.3", "SeriesInstanceUID": "1.2.3.4.5",
             "SOPInstanceUID": "1.2.3.4.5.6", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
             "InstanceNumber": 12, "NumberOfFrames": None, "Rows": 512}

CASES = {
    "study, ascii": (_identifier("STUDY", **STUDY_KEYS), STUDY_ROW),
    "study, PatientID only": (_identifier("STUDY", PatientID="PID-1", StudyInstanceUID=""),
                              STUDY_ROW),
    "study, utf-8 name": (_identifier("STUDY", **STUDY_KEYS),
                          {**STUDY_ROW, "PatientName": "Müller^Zoë", "StudyDescription": "胸部"}),
    "study, request charset kept": (_identifier("STUDY", "ISO_IR 100", **STUDY_KEYS), STUDY_ROW),
    "study, request charset replaced": (_identifier("STUDY", "ISO_IR 100", **STUDY_KEYS),
                                        {**STUDY_ROW, "PatientName": "Ødegård^Å"}),
    "study, empty charset": (_identifier("STUDY", "", **STUDY_KEYS), STUDY_ROW),
    "study, missing values": (_identifier("STUDY", **STUDY_KEYS), {"StudyInstanceUID": "1.2"}),
    "image, binary and IS": (_identifier("IMAGE", **IMAGE_KEYS), IMAGE_ROW),
    "sequence return key": (_identifier("STUDY", StudyInstanceUID="",
                                        ReferencedStudySequence=Sequence()), STUDY_ROW),
    "odd lengths": (_identifier("STUDY", PatientID="", StudyInstanceUID="", StudyID=""),
                    {"PatientID": "ODD", "StudyInstanceUID": "1.2.3", "StudyID": "123"}),
}


@pytest.mark.parametrize("explicit", [True, False], ids=["explicit", "implicit"])
@pytest.mark.parametrize("case", list(CASES))
def test_identifier_equals_pydicom_encoding(case, explicit):
    identifier, row = CASES[case]
    query = translate_identifier(identifier, "STUDY")
    expected = encode(row_dataset(row, query, identifier), not explicit, True)
    got = IdentifierLayout(identifier, query.level).encode(row, explicit)
    assert got is not None, "this row should be written directly"
    assert got == expected
    # and it decodes to the same keys a client asked for
    back = decode(BytesIO(got), not explicit, True)
    assert back.QueryRetrieveLevel == query.level
    assert {e.keyword for e in back} >= {k for k in (e.keyword for e in identifier) if k}


@pytest.mark.parametrize("row, identifier", [
    ({"InstanceNumber": "twelve"}, _identifier("IMAGE", InstanceNumber="")),  # pydicom rewrites
    ({"InstanceNumber": 1.5}, _identifier("IMAGE", InstanceNumber="")),
    ({"ModalitiesInStudy": ["CT", "Ü"]}, _identifier("STUDY", ModalitiesInStudy="")),
    ({"SliceThickness": "1.0"}, _identifier("IMAGE", SliceThickness="")),  # DS: pydicom's job
    ({"PatientID": "x" * 70_000}, _identifier("STUDY", PatientID="")),  # too long for LO
])
def test_values_it_cannot_write_exactly_fall_back(row, identifier):
    assert IdentifierLayout(identifier, "STUDY").encode(row, explicit=True) is None


def _pynetdicom_command(status: int, identifier: bytes | None) -> bytes:
    rsp = C_FIND()
    rsp.MessageIDBeingRespondedTo = 7
    rsp.AffectedSOPClassUID = STUDY_ROOT
    rsp.Status = status
    rsp.Identifier = BytesIO(identifier) if identifier is not None else None
    msg = C_FIND_RSP()
    msg.primitive_to_message(rsp)
    return encode(msg.command_set, True, True)


@pytest.mark.parametrize("status, identifier", [(0xFF00, b"\x08\x00\x52\x00"), (0x0000, None)])
def test_find_command_set_equals_pynetdicom(status, identifier):
    assert response_command(FIND_RSP, STUDY_ROOT, 7, status, has_dataset=identifier is not None) == \
        _pynetdicom_command(status, identifier)


@pytest.mark.parametrize("status, comment, instance", [
    (0x0000, "", "1.2.3.4.5"), (0xA900, "SOP Class differs", "1.2.3.4"), (0xB000, "odd", "1.2.3"),
])
def test_store_command_set_equals_pynetdicom(status, comment, instance):
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 9
    rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    rsp.AffectedSOPInstanceUID = instance
    rsp.Status = status
    if comment:
        rsp.ErrorComment = comment
    msg = C_STORE_RSP()
    msg.primitive_to_message(rsp)
    expected = encode(msg.command_set, True, True)
    assert response_command(STORE_RSP, "1.2.840.10008.5.1.4.1.1.2", 9, status,
                            sop_instance_uid=instance, error_comment=comment) == expected


@pytest.mark.parametrize("max_pdu", [0, 16_384, 64])
def test_pdus_reassemble_into_the_message(max_pdu):
    identifier, row = CASES["study, ascii"]
    data = IdentifierLayout(identifier, "STUDY").encode(row, explicit=True)
    command = response_command(FIND_RSP, STUDY_ROOT, 7, 0xFF00, has_dataset=True)
    pdus = message_pdus(3, command, data, max_pdu)
    assert (len(pdus) == 1) == (max_pdu != 64)
    for pdata in pdus:  # item length (4) + context ID (1) + header and fragment, within the maximum
        assert max_pdu == 0 or sum(5 + len(v) for _, v in pdata.presentation_data_value_list) <= max_pdu
    msg = C_FIND_RSP()
    done = [msg.decode_msg(pdata) for pdata in pdus]
    assert done[-1] and not any(done[:-1])
    primitive = msg.message_to_primitive()
    assert primitive.Status == 0xFF00 and primitive.MessageIDBeingRespondedTo == 7
    assert primitive.Identifier.getvalue() == data
