"""STOW-RS through ``services.offload``: parts ingested on the far side of a socket pair.

The far side runs ``serve_ingest`` with the server's own ``ArchiveService.ingest``
(in a worker process in production; here a thread, so the test can read the same
services): the client sees exactly what a local ingest answers, refusals keep their
FailureReason, the audit records name the client, and once the far side is gone
parts are stored by the serve process itself.
"""

from __future__ import annotations

import socket
import threading

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from dicomvault.services.offload import IngestChannel, OffloadedIngest, serve_ingest

pytestmark = pytest.mark.interop


def _dataset(**attrs: str) -> pydicom.Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.901"
    ds.PatientName, ds.PatientID = "OFFLOAD^BOB", "OFF-1"
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


class _FarSide:
    """``serve_ingest`` over a socket pair, counting the parts it ingested."""

    def __init__(self, services: object) -> None:
        self.ingested: list[str] = []
        archive = services.archive  # type: ignore[attr-defined]

        def ingest(principal, data, *, door):  # the real ingest, counted
            result = archive.ingest(principal, data, door=door)
            self.ingested.append(result.sop_instance_uid)
            return result

        near, far = socket.socketpair()
        self.near = near
        self.thread = serve_ingest(far, ingest)


@pytest.fixture
def offloaded(https_server):
    services = https_server.services
    far = _FarSide(services)
    services.ingest_offload = OffloadedIngest([IngestChannel(far.near)], services.archive.ingest,
                                              on_stored=services.metrics.instance_stored)
    try:
        yield https_server, far
    finally:
        services.ingest_offload.close()
        services.ingest_offload = None
        far.thread.join(5)


def test_parts_are_ingested_on_the_far_side_with_the_same_outcomes(offloaded):
    server, far = offloaded
    from dicomvault.access.principal import system_principal
    from dicomvault.access.tokens import permissions_of

    operator = system_principal("cli")
    user = server.services.identity.create_user(operator, "offload-tech", {"technologist"})
    token = server.services.identity.create_api_token(operator, user.user_id, "interop",
                                                      permissions_of({"technologist"}), 1).token
    client = DICOMwebClient(f"{server.url}/dicomweb", session=server.session(token))
    first, second = _dataset(), _dataset()
    result = client.store_instances([first, second])
    assert len(result.ReferencedSOPSequence) == 2 and "FailedSOPSequence" not in result
    assert sorted(far.ingested) == sorted([first.SOPInstanceUID, second.SOPInstanceUID])

    # A different object under a stored SOP Instance UID: refused in the worker,
    # and the refusal keeps its class across the socket (0x0111, not 0x0110).
    changed = _dataset(SOPInstanceUID=first.SOPInstanceUID, PatientName="OFFLOAD^CHANGED")
    changed.file_meta.MediaStorageSOPInstanceUID = first.SOPInstanceUID
    with pytest.raises(requests.HTTPError) as refused:
        client.store_instances([changed])
    assert refused.value.response.status_code == 409
    failed = refused.value.response.json()["00081198"]["Value"]
    assert [item["00081197"]["Value"] for item in failed] == [[0x0111]]

    # Retrievable, and byte for byte what was sent.
    back = client.retrieve_instance(first.StudyInstanceUID, first.SeriesInstanceUID,
                                    first.SOPInstanceUID)
    assert back.PatientName == "OFFLOAD^BOB" and back.PixelData == first.PixelData

    # The audit names the client for every part, refused ones included.
    from sqlalchemy import text

    with server.services.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT outcome, user_id FROM audit_record WHERE event_code = '110104' "
            "AND door = 'dicomweb' ORDER BY seq")).all()
    assert [(row.outcome, row.user_id) for row in rows] == [
        (0, str(user.user_id)), (0, str(user.user_id)), (8, str(user.user_id))]


def test_once_the_far_side_is_gone_the_serve_process_stores_the_parts(offloaded):
    server, far = offloaded
    token = server.token("technologist", "offload-tech2")
    client = DICOMwebClient(f"{server.url}/dicomweb", session=server.session(token))
    client.store_instances([_dataset()])
    assert len(far.ingested) == 1
    far.near.shutdown(socket.SHUT_RDWR)  # the worker's end of the pair is gone
    far.thread.join(5)
    late = _dataset()
    result = client.store_instances([late])
    assert len(result.ReferencedSOPSequence) == 1
    assert len(far.ingested) == 1  # stored by the serve process, not sent anywhere
    back = client.retrieve_instance(late.StudyInstanceUID, late.SeriesInstanceUID, late.SOPInstanceUID)
    assert back.SOPInstanceUID == late.SOPInstanceUID


def test_a_worker_lost_mid_part_fails_that_part_only() -> None:
    near, far = socket.socketpair()
    channel = IngestChannel(near)
    reached = threading.Event()

    def swallow() -> None:  # reads the request, then the worker "dies" without answering
        far.recv(1 << 16)
        reached.set()
        far.close()

    threading.Thread(target=swallow, daemon=True).start()
    from dicomvault.access.principal import system_principal
    from dicomvault.errors import UnavailableError

    future = channel.submit(system_principal("test"), b"\0" * 64, "dicomweb")
    assert reached.wait(5)
    with pytest.raises(UnavailableError):
        future.result(5)
    assert channel.closed
    with pytest.raises(UnavailableError):
        channel.submit(system_principal("test"), b"\0" * 64, "dicomweb")
    channel.close()


def test_a_worker_that_never_answers_fails_the_part_in_time(monkeypatch) -> None:
    import time

    from dicomvault.access.principal import system_principal
    from dicomvault.errors import UnavailableError
    from dicomvault.services import offload

    monkeypatch.setattr(offload, "ANSWER_TIMEOUT_SECONDS", 0.5)
    near, far = socket.socketpair()  # the far side reads nothing and never answers
    local_calls: list[int] = []
    ingest = OffloadedIngest([IngestChannel(near)], lambda *a, **k: local_calls.append(1))
    started = time.monotonic()
    with pytest.raises(UnavailableError):
        ingest(system_principal("test"), b"\0" * 64, door="dicomweb")
    assert time.monotonic() - started < 5
    assert local_calls == []  # the channel is open: the part was not stored a second way
    far.close()
    ingest.close()
