"""Every file of pydicom's test corpus over DIMSE: stored and returned byte-identical by C-GET
and C-MOVE, or refused with a clear reason (issue 2, "How we will know")."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import build_context, evt

from tests.integration.dimse.scu import QR_CONTEXTS, connect, get_roles, split_file

pytestmark = pytest.mark.integration
CORPUS = Path(pydicom.data.__file__).parent / "test_files"


def _uids(data: bytes) -> tuple[str, str] | None:
    import io

    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True,
                             specific_tags=["StudyInstanceUID", "SeriesInstanceUID"])
        return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
    except Exception:  # noqa: BLE001
        return None


def _get(door, sop_class: str, ts: str, study: str, series: str, sop_instance: str):
    received: dict[str, tuple[str, bytes]] = {}

    def on_store(event):
        received[str(event.request.AffectedSOPInstanceUID)] = (
            str(event.context.transfer_syntax), event.request.DataSet.getvalue())
        return 0

    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = study
    query.SeriesInstanceUID = series
    query.SOPInstanceUID = sop_instance
    contexts = [build_context(c) for c in QR_CONTEXTS] + [build_context(sop_class, [ts])]
    assoc = connect(door, contexts=contexts, roles=get_roles([sop_class]))
    assoc.bind(evt.EVT_C_STORE, on_store)
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        StudyRootQueryRetrieveInformationModelGet,
    )

    final = [s.Status for s, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)]
    assoc.release()
    return final[-1] if final else -1, received


def _move(door, receiver, study: str, series: str, sop_instance: str) -> int:
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        StudyRootQueryRetrieveInformationModelMove,
    )

    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = study
    query.SeriesInstanceUID = series
    query.SOPInstanceUID = sop_instance
    assoc = connect(door)
    final = [s.Status for s, _ in assoc.send_c_move(
        query, "DEST", StudyRootQueryRetrieveInformationModelMove)]
    assoc.release()
    return final[-1] if final else -1


def test_corpus_each_file_round_trips_byte_identical_or_is_refused_with_reason(door, receiver):
    outcomes: dict[str, str] = {}
    accepted: dict[str, tuple[str, str, bytes, str, str]] = {}
    for path in sorted(p for p in CORPUS.rglob("*") if p.is_file()):
        name = str(path.relative_to(CORPUS))
        raw = path.read_bytes()
        try:
            ts, sop_class, sop_instance, data = split_file(raw)
        except Exception:  # noqa: BLE001 - no PS3.10 header: no SCU can send it as-is
            outcomes[name] = "not a PS3.10 file"
            continue
        if not (sop_class and sop_instance and ts):
            outcomes[name] = "file meta lacks UIDs"
            continue
        assoc = connect(door, contexts=[build_context(sop_class, [ts])])
        if not assoc.is_established:
            outcomes[name] = "refused: SOP class / transfer syntax not negotiated"
            continue
        rsp = None
        try:
            from dicomvault.dimse.raw_store import StoredInstance, send_stored_instance

            rsp = send_stored_instance(assoc, StoredInstance(sop_class, sop_instance, ts, data))
        finally:
            assoc.release()
        code = int(rsp.Status) if rsp is not None and "Status" in rsp else -1
        if code == 0:
            if sop_instance in accepted:
                assert accepted[sop_instance][2] == data, name  # same UID, same bytes
            uids = _uids(raw)
            assert uids is not None, name
            accepted[sop_instance] = (sop_class, ts, data, *uids)
            outcomes[name] = "stored"
        else:
            comment = str(rsp.get("ErrorComment", "")) if rsp is not None else ""
            assert 0xA700 <= code <= 0xCFFF or code == 0x0124, (name, hex(code))
            assert comment, (name, hex(code))
            outcomes[name] = f"refused 0x{code:04X}: {comment}"

    assert sum(1 for o in outcomes.values() if o == "stored") >= 50, outcomes
    for sop_instance, (sop_class, ts, data, study, series) in accepted.items():
        final, received = _get(door, sop_class, ts, study, series, sop_instance)
        assert final == 0, (sop_instance, hex(final))
        assert received == {sop_instance: (ts, data)}, sop_instance
        assert _move(door, receiver, study, series, sop_instance) == 0, sop_instance
        assert receiver.received.pop(sop_instance) == (ts, data), sop_instance
    print("\n".join(f"{k}: {v}" for k, v in sorted(outcomes.items())))
