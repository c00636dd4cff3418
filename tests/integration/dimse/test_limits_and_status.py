"""Limits (max associations, TCP_NODELAY, plain listener) and status mapping per service."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from tests.integration.dimse.conftest import start_door, stop_door
from tests.integration.dimse.scu import connect, make_ct, store_bytes
from tests.integration.dimse.support import free_port, peer_toml

pytestmark = pytest.mark.integration


@pytest.fixture
def make_door(tmp_path, pki):
    doors: list[Any] = []

    def make(peers: str, extra: str = "", plain_port: int = 0):
        d = start_door(tmp_path / f"d{len(doors)}", pki, peers, extra=extra, plain_port=plain_port)
        doors.append(d)
        return d

    yield make
    for d in doors:
        stop_door(d)


def test_accepted_sockets_have_tcp_nodelay(door):
    assoc = connect(door)
    assert assoc.is_established
    deadline = time.monotonic() + 5
    acceptors: list[Any] = []
    while not acceptors and time.monotonic() < deadline:
        acceptors = [a for a in door.server._ae.active_associations if a.is_acceptor]
        time.sleep(0.02)
    sock = acceptors[0].dul.socket.socket
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    assoc.release()


def test_association_over_limit_rejected_transient(make_door):
    door = make_door(peer_toml("SCU"), extra="")
    limit = door.settings.dimse.max_associations
    held = [connect(door) for _ in range(limit)]
    assert all(a.is_established for a in held)
    extra = connect(door)
    assert extra.is_rejected
    rj = extra.acceptor.primitive
    assert (rj.result, rj.result_source, rj.diagnostic) == (2, 3, 2)  # local-limit-exceeded
    for a in held:
        a.release()
    ok = connect(door)
    assert ok.is_established
    ok.release()


def test_plain_listener_only_when_configured(make_door, pki):
    plain = free_port()
    door = make_door(peer_toml("SCU"), plain_port=plain)
    assert door.server.plain_port == plain
    ae = AE(ae_title="SCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", plain, ae_title="DICOMVAULT")
    assert assoc.is_established and assoc.send_c_echo().Status == 0
    assoc.release()


def test_compressed_transfer_syntax_preferred_over_uncompressed_fallback(door):
    ae = AE(ae_title="SCU")
    cx = build_context(MRImageStorage, [ExplicitVRLittleEndian, RLELossless,
                                        ImplicitVRLittleEndian])
    assoc = connect(door, contexts=[cx])
    assert assoc.is_established
    assert [str(c.transfer_syntax[0]) for c in assoc.accepted_contexts] == [RLELossless]
    assoc.release()
    del ae


AUDITOR_PEERS = peer_toml("READER", role="auditor")


@pytest.fixture
def auditor_door(make_door):
    return make_door(AUDITOR_PEERS + peer_toml("SCU"))


def test_store_forbidden_for_role_without_write_answers_0124(auditor_door):
    ds, data = make_ct()
    assoc = connect(auditor_door, ae_title="READER",
                    contexts=[build_context(CTImageStorage, [ExplicitVRLittleEndian])])
    assert store_bytes(assoc, ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian,
                       data) == 0x0124
    assoc.release()


def test_find_forbidden_for_role_without_search_answers_0124(auditor_door):
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    assoc = connect(auditor_door, ae_title="READER")
    statuses = [s.Status for s, _ in assoc.send_c_find(query,
                                                        StudyRootQueryRetrieveInformationModelFind)]
    assoc.release()
    assert statuses == [0x0124]


def test_get_by_role_without_read_sends_nothing(auditor_door):
    """Refused (0x0124) or, when the policy hides existence, zero sub-operations."""
    from pynetdicom import evt

    from tests.integration.dimse.scu import QR_CONTEXTS, get_roles

    ds, data = make_ct()
    assoc = connect(auditor_door, ae_title="SCU",
                    contexts=[build_context(CTImageStorage, [ExplicitVRLittleEndian])])
    assert store_bytes(assoc, ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian,
                       data) == 0
    assoc.release()
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ds.StudyInstanceUID
    received: list[int] = []
    contexts = [build_context(c) for c in QR_CONTEXTS]
    contexts.append(build_context(CTImageStorage, [ExplicitVRLittleEndian]))
    assoc = connect(auditor_door, ae_title="READER", contexts=contexts,
                    roles=get_roles([CTImageStorage]))
    def on_store(event: Any) -> int:
        received.append(1)
        return 0

    assoc.bind(evt.EVT_C_STORE, on_store)
    responses = [s for s, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)]
    assoc.release()
    assert received == []
    assert responses[-1].Status in (0x0124, 0x0000)
    assert responses[-1].get("NumberOfCompletedSuboperations", 0) == 0


def test_move_without_unique_key_answers_a900(door, receiver):
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientName = "X*"
    assoc = connect(door)
    statuses = [s.Status for s, _ in assoc.send_c_move(query, "DEST",
                                                        StudyRootQueryRetrieveInformationModelMove)]
    assoc.release()
    assert statuses == [0xA900]


def test_find_capped_result_ends_with_warning(make_door):
    door = make_door(peer_toml("SCU"), extra="\n[archive]\nmax_query_results = 2\n")
    study = generate_uid()
    assoc = connect(door, contexts=[build_context(CTImageStorage, [ExplicitVRLittleEndian])])
    for _ in range(3):
        ds, data = make_ct(StudyInstanceUID=study)
        assert store_bytes(assoc, ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian,
                           data) == 0
    assoc.release()
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = study
    query.SeriesInstanceUID = ""
    query.SOPInstanceUID = ""
    assoc = connect(door)
    responses = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
    # the warning is the final response: nothing stray is left to answer the next request
    again = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
    assoc.release()
    pending = [i for s, i in responses if s.Status == 0xFF00]
    assert len(pending) == 2
    final = responses[-1][0]
    assert final.Status == 0xB000
    assert "capped" in str(final.get("ErrorComment", ""))
    assert [s.Status for s, _ in again] == [0xFF00, 0xFF00, 0xB000]
