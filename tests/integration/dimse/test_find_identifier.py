"""C-FIND reads a plain identifier without pydicom, and one with a sequence through pydicom."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
)

from dicomvault.dimse.handlers import find as find_handler
from tests.integration.dimse.scu import connect, make_ct, store_bytes

pytestmark = pytest.mark.integration


def _matches(door: Any, query: Dataset) -> list[str]:
    assoc = connect(door)
    responses = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
    assoc.release()
    assert responses[-1][0].Status == 0x0000
    return sorted(str(i.SOPInstanceUID) for s, i in responses if s.Status == 0xFF00)


def test_find_identifier_decoded_by_pydicom_only_when_needed(door: Any, monkeypatch: Any) -> None:
    study = generate_uid()
    assoc = connect(door, contexts=[build_context(CTImageStorage, [ExplicitVRLittleEndian])])
    stored = []
    for _ in range(2):
        ds, data = make_ct(StudyInstanceUID=study)
        assert store_bytes(assoc, ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian,
                           data) == 0
        stored.append(str(ds.SOPInstanceUID))
    assoc.release()

    calls: list[int] = []
    pydicom_decode = find_handler.decode

    def counting_decode(*args: Any) -> Any:
        calls.append(1)
        return pydicom_decode(*args)

    monkeypatch.setattr(find_handler, "decode", counting_decode)
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = study
    query.SeriesInstanceUID = ""
    query.SOPInstanceUID = ""
    query.InstanceNumber = ""
    assert _matches(door, query) == sorted(stored)
    assert calls == []  # read by hand

    query.ReferencedImageSequence = Sequence()  # a sequence return key: pydicom's job
    assert _matches(door, query) == sorted(stored)
    assert calls == [1]
