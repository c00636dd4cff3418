"""The DIMSE door: a pynetdicom AE serving C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET.

A TLS listener on ``settings.dimse.port`` (PS3.15 B.9 BCP195, mutual TLS by
default) and a plain-TCP listener only when ``settings.dimse.plain_port`` is
non-zero.  Limits: maximum PDU (also enforced on receipt), maximum concurrent
associations (A-ASSOCIATE-RJ transient, local-limit-exceeded), ACSE / DIMSE /
network timeouts.  Every accepted socket gets TCP_NODELAY.  See
docs/conformance.md for the SOP classes and transfer syntaxes.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

from pydicom.uid import (
    AllTransferSyntaxes,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AllStoragePresentationContexts, _config, evt
from pynetdicom.dimse_primitives import C_FIND, C_STORE
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.utils import make_target

from dicomvault.audit.events import Outcome
from dicomvault.dimse import status, tls
from dicomvault.dimse.acceptor import GatedAE, GatedRequestHandler, GatedServer
from dicomvault.dimse.association import (
    REASON_NO_REASON,
    RESULT_REJECTED_PERMANENT,
    SOURCE_SERVICE_USER,
    Rejection,
    decide,
    node_authentication_event,
)
from dicomvault.dimse.balance import WorkerLoad
from dicomvault.dimse.handlers._retrieve import plan_retrieve, refusal_for
from dicomvault.dimse.handlers.echo import handle_echo
from dicomvault.dimse.handlers.find import serve_find
from dicomvault.dimse.handlers.get import handle_get
from dicomvault.dimse.handlers.move import handle_move
from dicomvault.dimse.handlers.store import handle_store, serve_store
from dicomvault.dimse.identity import PeerCredentials, principal_for
from dicomvault.errors import DicomVaultError

LOG = logging.getLogger(__name__)

_UNCOMPRESSED = [str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian), str(ExplicitVRBigEndian)]
#: Transfer syntaxes accepted for storage: every one pydicom knows (PS3.5 Annex A),
#: compressed included; objects are stored as received, never transcoded.  The acceptor's
#: order decides (PS3.8 9.3.3.2), so encapsulated syntaxes come first: an SCU proposing
#: "JPEG 2000, Explicit VR LE" for a JPEG 2000 object then sends it as it is instead of
#: decompressing it; uncompressed syntaxes come last, Explicit VR Little Endian first.
STORAGE_TRANSFER_SYNTAXES = [
    *(str(ts) for ts in AllTransferSyntaxes if str(ts) not in _UNCOMPRESSED), *_UNCOMPRESSED]
#: Transfer syntaxes for Verification and Query/Retrieve identifiers.
QR_TRANSFER_SYNTAXES = [str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian),
                        str(DeflatedExplicitVRLittleEndian), str(ExplicitVRBigEndian)]

SERVICE_OF_SOP_CLASS = {
    str(Verification): "echo",
    str(PatientRootQueryRetrieveInformationModelFind): "find",
    str(StudyRootQueryRetrieveInformationModelFind): "find",
    str(PatientRootQueryRetrieveInformationModelMove): "move",
    str(StudyRootQueryRetrieveInformationModelMove): "move",
    str(PatientRootQueryRetrieveInformationModelGet): "get",
    str(StudyRootQueryRetrieveInformationModelGet): "get",
}


def supported_contexts() -> list[PresentationContext]:
    """SCP presentation contexts (PS3.4 B.5 storage SOP classes, C.6 Q/R models, A Verification).

    Storage contexts accept SCP/SCU role selection so C-GET requestors can take the
    Storage SCP role (PS3.7 D.3.3.4).
    """
    contexts = []
    for sop_class in SERVICE_OF_SOP_CLASS:
        cx = PresentationContext()
        cx.abstract_syntax = sop_class
        cx.transfer_syntax = list(QR_TRANSFER_SYNTAXES)
        contexts.append(cx)
    for storage in AllStoragePresentationContexts:
        cx = PresentationContext()
        cx.abstract_syntax = storage.abstract_syntax
        cx.transfer_syntax = list(STORAGE_TRANSFER_SYNTAXES)
        cx.scu_role = True
        cx.scp_role = True
        contexts.append(cx)
    return contexts


def _quiet_pynetdicom() -> None:
    """Keep PHI out of logs: pynetdicom logs C-FIND/C-MOVE/C-GET identifiers (names, IDs)
    and per-message summaries by default.  These are process-wide switches of the library;
    the archive never wants them on.  Plain-text temp files for received data sets
    (``STORE_RECV_CHUNKED_DATASET``) stay off: no plaintext DICOM on disk."""
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    _config.LOG_HANDLER_LEVEL = "none"
    _config.STORE_RECV_CHUNKED_DATASET = False


def _service_allowed(abstract_syntax: str, services: frozenset[str]) -> bool:
    service = SERVICE_OF_SOP_CLASS.get(abstract_syntax)
    if service is None:  # a storage SOP class: used by C-STORE, and by C-GET sub-operations
        return bool({"store", "get"} & services)
    return service in services


def _timed(handler: Any, service: str, metrics: Any) -> Any:
    """Wrap a status-returning handler to count it in the Prometheus metrics (no PHI in labels)."""
    if metrics is None:
        return handler

    def wrapper(event: Any, *args: Any) -> Any:
        started = time.perf_counter()
        result = handler(event, *args)
        status_value = getattr(result, "Status", result if isinstance(result, int) else 0xC000)
        metrics.dimse_request(service, int(status_value), time.perf_counter() - started)
        return result

    return wrapper


class DimseServer:
    """DIMSE listeners over one ``Services`` container (PS3.7, PS3.8, PS3.15 B.9)."""

    def __init__(self, services: Any, listen_sockets: Mapping[str, socket.socket] | None = None,
                 load: WorkerLoad | None = None) -> None:
        """``listen_sockets`` ("tls", "plain"): sockets bound by the serve process, for a worker;
        ``load``: that worker's slot in the table the workers balance associations by."""
        self.services = services
        self.settings = services.settings
        self._listen_sockets = dict(listen_sockets or {})
        self._load = load
        self._ae: GatedAE | None = None
        self._servers: list[GatedServer] = []
        self._tls_server: GatedServer | None = None
        self._plain_server: GatedServer | None = None
        self._client_tls: ssl.SSLContext | None = None

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        """Bind the listeners and serve in background threads; returns once listening."""
        dimse = self.settings.dimse
        _quiet_pynetdicom()
        ae = GatedAE(ae_title=dimse.ae_title)
        ae.maximum_pdu_size = dimse.max_pdu
        ae.maximum_associations = dimse.max_associations
        ae.acse_timeout = dimse.acse_timeout
        ae.dimse_timeout = dimse.dimse_timeout
        ae.network_timeout = dimse.network_timeout
        ae.connection_timeout = dimse.acse_timeout
        self._ae = ae
        contexts = supported_contexts()
        metrics = getattr(self.services, "metrics", None)
        handlers = [
            (evt.EVT_C_ECHO, _timed(handle_echo, "echo", metrics)),
            # requests ``serve_store`` leaves to pynetdicom (see there)
            (evt.EVT_C_STORE, _timed(handle_store, "store", metrics), [self.services]),
            (evt.EVT_C_MOVE, handle_move, [self.services, self.client_tls]),
            (evt.EVT_C_GET, handle_get, [self.services]),
        ]
        if metrics is not None:
            handlers += [
                (evt.EVT_ACCEPTED, lambda _e: metrics.association("accepted")),
                (evt.EVT_REJECTED, lambda _e: metrics.association("rejected")),
                (evt.EVT_ABORTED, lambda _e: metrics.association("aborted")),
            ]
        self._tls_server = self._serve(
            (dimse.host, dimse.port), tls.server_context(self.settings), contexts, handlers,
            self._listen_sockets.get("tls"))
        if dimse.plain_port:
            LOG.warning("plain-TCP DIMSE listener enabled on port %d (dimse.plain_port)",
                        dimse.plain_port)
            self._plain_server = self._serve((dimse.host, dimse.plain_port), None, contexts,
                                             handlers, self._listen_sockets.get("plain"))

    def _serve(self, address: tuple[str, int], ssl_context: ssl.SSLContext | None,
               contexts: list[PresentationContext], handlers: list[Any],
               inherited: socket.socket | None = None) -> GatedServer:
        assert self._ae is not None  # noqa: S101
        server_class: type[GatedServer] = GatedServer
        if inherited is not None:
            server_class = type("InheritedGatedServer", (GatedServer,),
                                {"inherited_socket": inherited, "load": self._load})
        server: GatedServer = self._ae.make_server(  # type: ignore[assignment]
            address, ae_title=self.settings.dimse.ae_title, contexts=contexts,
            ssl_context=ssl_context, evt_handlers=handlers, server_class=server_class,
            request_handler=GatedRequestHandler,
        )
        server.gate = self._gate
        server.retrieve_planner = self._plan_retrieve  # type: ignore[attr-defined]
        store = _timed(handle_store, "store", getattr(self.services, "metrics", None))
        server.responders = {  # type: ignore[attr-defined]
            C_FIND: partial(serve_find, services=self.services),
            C_STORE: partial(serve_store, handler=lambda event: store(event, self.services)),
        }
        server.tls_failure = self._tls_failed
        server.handshake_timeout = self.settings.dimse.acse_timeout
        server.max_pdu = self.settings.dimse.max_pdu
        thread = threading.Thread(target=make_target(server.serve_forever),
                                  name=f"dimse-listener-{address[1]}", daemon=True)
        thread.start()
        self._ae._servers.append(server)
        self._servers.append(server)
        return server

    def stop(self) -> None:
        """Stop listening and end active associations (clean shutdown on SIGTERM)."""
        if self._ae is not None and self._listen_sockets:
            # A worker: the listening sockets are shared with the other workers, so they
            # are neither shut down nor closed here (the process exit releases them).
            for assoc in self._ae.active_associations:
                assoc.abort()
        elif self._ae is not None:
            self._ae.shutdown()
        self._servers.clear()

    @property
    def port(self) -> int:
        """The bound TLS port (useful when configured as 0)."""
        assert self._tls_server is not None  # noqa: S101
        return int(self._tls_server.server_address[1])

    @property
    def plain_port(self) -> int:
        """The bound plain-TCP port, or 0 when there is no plain listener."""
        return int(self._plain_server.server_address[1]) if self._plain_server else 0

    def client_tls(self) -> ssl.SSLContext:
        """Client TLS context for C-MOVE destinations (built once)."""
        if self._client_tls is None:
            self._client_tls = tls.client_context(self.settings)
        return self._client_tls

    # -- association gate ------------------------------------------------------------
    def _audit(self, event: Any) -> None:
        self.services.audit.append([event])

    def _gate(self, assoc: Any) -> tuple[int, int, int] | None:
        """PS3.8 7.1.1.9: accept (and set the principal) or return an A-ASSOCIATE-RJ triple."""
        rq = assoc.requestor.primitive
        user_identity = None
        item = assoc.requestor.user_identity
        if item is not None:
            user_identity = (int(item.user_identity_type), bytes(item.primary_field or b""),
                             bytes(item.secondary_field or b""))
        creds = PeerCredentials(
            ae_title=str(rq.calling_ae_title),
            address=str(assoc.requestor.address_info.address),
            cert_sha256=tls.certificate_sha256(getattr(assoc.dul.socket, "socket", None)),
            user_identity=user_identity,
        )
        decision = decide(self.settings, str(rq.called_ae_title), creds)
        if isinstance(decision, Rejection):
            LOG.info("association rejected: %s", decision.why)
            try:
                self._audit(node_authentication_event(
                    self.settings, creds, Outcome.MINOR_FAILURE, decision.why))
            except Exception:  # noqa: BLE001 - the reject stands either way
                LOG.exception("audit of an association reject failed")
            return (decision.result, decision.source, decision.reason)
        try:
            principal = principal_for(getattr(self.services, "identity", None), decision.peer,
                                      creds)
        except DicomVaultError as exc:
            # PS3.7 D.3.3.7.2: a user identity the acceptor does not accept rejects the
            # association (rejected-permanent, service-user, no-reason-given)
            LOG.info("association rejected: identity refused (%s)", exc.code)
            try:
                self._audit(node_authentication_event(
                    self.settings, creds, Outcome.MINOR_FAILURE, f"identity refused ({exc.code})"))
            except Exception:  # noqa: BLE001 - the reject stands either way
                LOG.exception("audit of an association reject failed")
            return (RESULT_REJECTED_PERMANENT, SOURCE_SERVICE_USER, REASON_NO_REASON)
        try:
            self._audit(node_authentication_event(
                self.settings, creds, Outcome.SUCCESS, "association accepted"))
        except Exception:  # noqa: BLE001 - no audit record, no association
            LOG.exception("audit unavailable; rejecting association (transient)")
            return (0x02, 0x01, 0x01)
        assoc.dv_peer = decision.peer
        assoc.dv_services = decision.services
        assoc.dv_principal = principal
        assoc.acceptor.supported_contexts = [
            cx for cx in assoc.acceptor.supported_contexts
            if _service_allowed(str(cx.abstract_syntax), decision.services)
        ]
        return None

    def _tls_failed(self, address: Any, exc: BaseException) -> None:
        host = address[0] if isinstance(address, tuple) else str(address)
        LOG.info("TLS handshake from %s failed: %s", host, type(exc).__name__)
        creds = PeerCredentials(ae_title="", address=host)
        try:
            self._audit(node_authentication_event(
                self.settings, creds, Outcome.MINOR_FAILURE, "TLS handshake failed"))
        except Exception:  # noqa: BLE001
            LOG.exception("audit of a TLS failure failed")

    def _plan_retrieve(self, assoc: Any, msg: Any, context: Any) -> status.DimseStatus | None:
        """Plan a C-MOVE/C-GET; a refusal status when it cannot start (PS3.4 C.4.2.1.5)."""
        try:
            assoc.dv_plans[msg.MessageID] = plan_retrieve(assoc, self.services, msg, context)
        except Exception as exc:  # noqa: BLE001 - every refusal becomes a status
            return refusal_for(exc)
        return None
