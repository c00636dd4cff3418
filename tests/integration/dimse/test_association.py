"""Association policy and TLS: who may associate (PS3.8 7.1.1.9, PS3.15 B.9, STANDARDS 1-5, 16)."""

from __future__ import annotations

import socket
import ssl
import time

import pytest
from pynetdicom import AE, build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import select

from dicomvault.audit.models import AuditRecord
from tests.integration.dimse.scu import connect

pytestmark = pytest.mark.integration
pytestmark_filter = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# (calling AE, client cert, called AE) -> expected (result, source, reason) of the A-ASSOCIATE-RJ
REJECTIONS = [
    ("INTRUDER", "scu", "DICOMVAULT", (1, 1, 3)),      # unknown calling AE title
    ("SCU", "scu", "NOTUS", (1, 1, 7)),               # called AE title is not ours
    ("HOSTLOCK", "scu", "DICOMVAULT", (1, 1, 3)),     # allowed only from another host
    ("PINNED", "other", "DICOMVAULT", (1, 1, 3)),     # certificate differs from the pinned one
]


def _security_alerts(door, outcome: int) -> list[AuditRecord]:
    with door.services.read_factory() as s:
        return list(s.execute(select(AuditRecord).where(
            AuditRecord.event_code == "110113", AuditRecord.outcome == outcome)).scalars())


def test_echo_succeeds_over_mutual_tls(door):
    assoc = connect(door)
    assert assoc.is_established
    status = assoc.send_c_echo()
    assoc.release()
    assert status.Status == 0x0000
    assert any(r.user_id == "SCU" for r in _security_alerts(door, 0))


def test_echo_succeeds_with_pinned_certificate(door):
    assoc = connect(door, ae_title="PINNED", client="scu")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()


@pytest.mark.parametrize(("calling", "client", "called", "expected"), REJECTIONS)
def test_association_rejected_with_reason_when_peer_not_allowed(door, calling, client, called,
                                                                 expected):
    assoc = connect(door, ae_title=calling, client=client, called=called)
    assert assoc.is_rejected
    rj = assoc.acceptor.primitive
    assert (rj.result, rj.result_source, rj.diagnostic) == expected
    alerts = _security_alerts(door, 4)
    assert alerts and alerts[-1].address == "127.0.0.1"
    # the server stays up for the next, legitimate peer
    ok = connect(door)
    assert ok.is_established and ok.send_c_echo().Status == 0
    ok.release()


def _wait_for_alert(door, outcome: int, timeout: float = 5.0) -> list[AuditRecord]:
    """The server audits a failed handshake in its own thread, maybe after the client gave up."""
    deadline = time.monotonic() + timeout
    while not (alerts := _security_alerts(door, outcome)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alerts


def test_tls_handshake_refused_without_client_certificate(door):
    assoc = connect(door, client=None)
    assert not assoc.is_established
    alerts = _wait_for_alert(door, 4)
    assert alerts and alerts[-1].address == "127.0.0.1"


def test_tls_handshake_refused_for_certificate_from_another_ca(door):
    assoc = connect(door, cert=door.pki.rogue)
    assert not assoc.is_established
    assert _wait_for_alert(door, 4)


@pytestmark_filter
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_below_1_2_refused(door, version):
    from dicomvault.dimse.tls import server_context

    assert server_context(door.settings).minimum_version >= ssl.TLSVersion.TLSv1_2
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(door.pki.ca.cert))
    ctx.load_cert_chain(str(door.pki.clients["scu"].cert), str(door.pki.clients["scu"].key))
    try:
        ctx.minimum_version = version
        ctx.maximum_version = version
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pytest.fail("local OpenSSL cannot even build a legacy client context")
    with socket.create_connection(("127.0.0.1", door.port), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, OSError)):
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls_sock:
                tls_sock.do_handshake()


def test_tls12_server_offers_only_bcp195_aead_suites(door):
    from dicomvault.dimse.tls import server_context

    names = [c["name"] for c in server_context(door.settings).get_ciphers()]
    assert names
    for name in names:
        assert "GCM" in name or name.startswith("TLS_"), name
        assert not any(bad in name for bad in ("CBC", "RC4", "NULL", "SHA1", "3DES", "MD5"))
        if not name.startswith("TLS_"):  # TLS 1.2 suites: forward secrecy only
            assert name.startswith(("ECDHE-", "DHE-")), name


@pytest.mark.parametrize("cipher", ["AES128-GCM-SHA256", "AES256-SHA", "ECDHE-RSA-AES128-SHA"])
def test_tls12_client_with_weak_suite_refused(door, cipher):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(door.pki.ca.cert))
    ctx.load_cert_chain(str(door.pki.clients["scu"].cert), str(door.pki.clients["scu"].key))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(cipher)
    with socket.create_connection(("127.0.0.1", door.port), timeout=5) as raw:
        with pytest.raises(ssl.SSLError):
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls_sock:
                tls_sock.do_handshake()


def test_tls13_negotiated(door):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(door.pki.ca.cert))
    ctx.load_cert_chain(str(door.pki.clients["scu"].cert), str(door.pki.clients["scu"].key))
    with socket.create_connection(("127.0.0.1", door.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls_sock:
            assert tls_sock.version() == "TLSv1.3"


def test_plain_client_on_tls_port_refused_and_server_stays_up(door):
    ae = AE(ae_title="SCU")
    ae.acse_timeout = ae.network_timeout = 5
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", door.port, ae_title="DICOMVAULT")
    assert not assoc.is_established
    ok = connect(door)
    assert ok.is_established and ok.send_c_echo().Status == 0
    ok.release()


def test_no_plain_listener_by_default(door):
    assert door.server.plain_port == 0
    assert door.settings.dimse.plain_port == 0


def test_silent_client_does_not_block_the_listener(door):
    with socket.create_connection(("127.0.0.1", door.port), timeout=5):
        # a client that connects and never starts TLS must not stall others
        ok = connect(door)
        assert ok.is_established and ok.send_c_echo().Status == 0
        ok.release()


def test_service_not_allowed_for_ae_rejects_its_contexts(door):
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        StudyRootQueryRetrieveInformationModelFind,
    )

    assoc = connect(door, ae_title="STOREONLY",
                    contexts=[build_context(Verification),
                              build_context(StudyRootQueryRetrieveInformationModelFind)])
    assert assoc.is_established
    accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
    assoc.release()
    assert str(Verification) in accepted
    assert str(StudyRootQueryRetrieveInformationModelFind) not in accepted


def _user_identity(kind: int, primary: bytes, secondary: bytes = b""):
    from pynetdicom.pdu_primitives import UserIdentityNegotiation

    item = UserIdentityNegotiation()
    item.user_identity_type = kind
    item.primary_field = primary
    if secondary:
        item.secondary_field = secondary
    return item


def _create_user(door, name: str, role: str) -> str:
    from dicomvault.access.principal import system_principal

    created = door.services.identity.create_user(system_principal("test"), name,
                                                 frozenset({role}), name)
    assert created.one_time_password
    return created.one_time_password


# (calling AE, user, role, password ok?) -> accepted?
USER_IDENTITY_CASES = [
    ("SCU", "alice", "technologist", False, False),    # wrong passcode
    ("SCU", "bob", "technologist", True, False),       # PHI role without a pinned certificate
    ("PINNED", "carol", "technologist", True, True),   # PHI role, pinned certificate: accepted
]


@pytest.mark.parametrize(("calling", "user", "role", "good", "accepted"), USER_IDENTITY_CASES)
def test_user_identity_negotiation(door, calling, user, role, good, accepted):
    password = _create_user(door, user, role)
    secret = password if good else password + "x"
    assoc = connect(door, ae_title=calling,
                    roles=[_user_identity(2, user.encode(), secret.encode())])
    assert assoc.is_established is accepted
    if accepted:
        acceptors = [a for a in door.server._ae.active_associations if a.is_acceptor]
        principals = {a.dv_principal.id: a.dv_principal for a in acceptors}
        assert any(p.kind == "user" and p.name == user for p in principals.values()), principals
        assoc.release()
    else:
        rj = assoc.acceptor.primitive
        assert (rj.result, rj.result_source, rj.diagnostic) == (1, 1, 1)


def test_gate_admits_a_known_peer_while_another_writer_holds_the_index(door):
    """The peer check only reads: a write transaction elsewhere (an ingest batch, a long
    admin change) does not hold up the identity decision for a new association."""
    import threading

    from sqlalchemy import text

    identity = door.services.identity
    with door.services.engine.connect() as writer:
        writer.begin()  # SQLite: the writers' lock file, then BEGIN IMMEDIATE
        writer.execute(text("UPDATE access_dicom_peers SET port = port WHERE 0"))
        result: list[object] = []
        worker = threading.Thread(
            target=lambda: result.append(identity.principal_from_dimse("SCU", None, None,
                                                                       "127.0.0.1")),
            daemon=True)
        worker.start()
        worker.join(timeout=5)
        admitted_while_locked = bool(result)
        writer.rollback()
    worker.join(timeout=70)
    assert admitted_while_locked, "the gate waited for another writer"
    assert result[0].id == "ae:SCU" and result[0].door == "dimse"
    # a refusal still writes its audit record (in a write transaction of its own)
    from dicomvault.errors import NotAuthenticatedError

    with pytest.raises(NotAuthenticatedError):
        identity.principal_from_dimse("INTRUDER", None, None, "127.0.0.9")
    with door.services.read_factory() as s:
        refusals = list(s.execute(select(AuditRecord).where(
            AuditRecord.address == "127.0.0.9")).scalars())
    assert len(refusals) == 1 and refusals[0].outcome != 0
