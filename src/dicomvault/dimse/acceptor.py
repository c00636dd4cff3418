"""pynetdicom adapters: the accepting socket, ACSE gate and association (PS3.8).

* ``GatedServer``: TCP_NODELAY on every accepted socket (a response PDU
  written without it waits ~40 ms on the peer's delayed ACK) and the TLS
  handshake moved off the accept loop into the association's thread, with
  the ACSE timeout, so one slow or non-TLS client cannot stall the listener.
* ``LimitedSocket``: refuses PDUs longer than we accept (PS3.8 9.3.1 /
  D.1 Maximum Length) with an A-ABORT (provider, invalid-PDU-parameter).
* ``GatedACSE``: runs the association policy (``association.decide``) before
  pynetdicom's own negotiation and drops presentation contexts of services
  the peer may not use.
* ``GatedAssociation``: sends ``StoredInstance`` objects byte-identical and
  runs event-driven reactors (``reactor.py``) instead of 1 ms polling loops.
* In a worker process, the accept loop takes turns with the other workers by
  their number of live associations (``balance.py``).
"""

from __future__ import annotations

import copy
import logging
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

from pynetdicom import evt
from pynetdicom.acse import ACSE
from pynetdicom.ae import ApplicationEntity
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer
from pynetdicom.utils import make_target  # noqa: F401  (re-exported for server.py)

from dicomvault.dimse.balance import WorkerLoad
from dicomvault.dimse.raw_store import StoredInstance, send_stored_instance
from dicomvault.dimse.reactor import IDLE_WAIT, install_event_driven_reactors

LOG = logging.getLogger(__name__)

MODE_ACCEPTOR = "acceptor"
#: Largest A-ASSOCIATE-RQ / release / abort PDU accepted (bytes).
MAX_CONTROL_PDU = 1 << 20
#: A-ABORT PDU: source 2 (service provider), reason 6 (invalid PDU parameter value).
ABORT_INVALID_PDU_PARAMETER = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, 0x06])


def set_nodelay(sock: socket.socket) -> None:
    """Disable Nagle so small PDUs (responses, command sets) go out at once."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # e.g. a UNIX socket in tests; nothing to tune
        pass


class PduTooLargeError(OSError):
    """The peer sent a PDU longer than the negotiated/allowed maximum."""


class _Ticket:
    """One accepted connection's place in its worker's load: given back exactly once,
    when its association ends or when the connection fails before one starts."""

    def __init__(self, load: WorkerLoad | None) -> None:
        self._load = load
        self._lock = threading.Lock()
        self.handed_over = False

    def done(self) -> None:
        with self._lock:
            load, self._load = self._load, None
        if load is not None:
            load.left()


#: The ticket of the connection the current thread is setting up (see ``process_request_thread``).
_connection = threading.local()


class LimitedSocket(AssociationSocket):
    """AssociationSocket that refuses oversize PDUs (PS3.8 D.1 Maximum Length Received)."""

    def __init__(self, assoc: Association, client_socket: socket.socket, max_pdu: int) -> None:
        super().__init__(assoc, client_socket=client_socket)
        self._max_pdu = max_pdu
        self._expect_header = True

    def _recv_exactly(self, nr_bytes: int) -> bytearray:
        """Read ``nr_bytes`` (fewer only if the peer closes) in large ``recv_into`` calls.

        pynetdicom reads 4 KiB at a time; a 256 KiB P-DATA-TF then costs 64 TLS reads.
        """
        sock = cast(socket.socket, self.socket)
        buf = bytearray(nr_bytes)
        view = memoryview(buf)
        got = 0
        try:
            while got < nr_bytes:
                n = sock.recv_into(view[got:], nr_bytes - got)
                if not n:
                    break
                got += n
        finally:
            view.release()
        if got < nr_bytes:
            del buf[got:]
        return buf

    def recv(self, nr_bytes: int) -> bytearray:
        """Read the PDU header, then its body (the DUL always reads in that order)."""
        data = self._recv_exactly(nr_bytes)
        if self._expect_header and nr_bytes == 6 and len(data) == 6:
            pdu_type, _, length = struct.unpack(">BBL", bytes(data))
            limit = self._max_pdu + 6 if pdu_type == 0x04 else MAX_CONTROL_PDU
            if self._max_pdu and length > limit:
                LOG.warning("refusing PDU type 0x%02X of %d bytes (limit %d)",
                            pdu_type, length, limit)
                try:
                    cast(socket.socket, self.socket).sendall(ABORT_INVALID_PDU_PARAMETER)
                except OSError:
                    pass
                raise PduTooLargeError("PDU exceeds maximum length")
            self._expect_header = False
        else:
            self._expect_header = True
        return data


class GatedACSE(ACSE):
    """ACSE whose acceptor negotiation first asks the server's gate (PS3.8 7.1.1.9)."""

    def _negotiate_as_acceptor(self) -> None:
        server = getattr(self.assoc, "_server", None)
        gate: Callable[[Association], tuple[int, int, int] | None] | None = getattr(
            server, "gate", None)
        if gate is not None:
            try:
                reject = gate(self.assoc)
            except Exception:  # noqa: BLE001 - never accept on a failing gate
                LOG.exception("association gate failed; rejecting")
                reject = (0x02, 0x01, 0x01)
            if reject is not None:
                assoc_rq = self.requestor.primitive
                self.requestor.ae_title = assoc_rq.calling_ae_title if assoc_rq else ""
                self.send_reject(*reject)
                evt.trigger(self.assoc, evt.EVT_REJECTED, {})
                self.assoc.kill()
                return
        super()._negotiate_as_acceptor()


class GatedAssociation(Association):
    """Association that sends ``StoredInstance`` sub-operations without re-encoding."""

    def __init__(self, ae: Any, mode: str) -> None:
        super().__init__(ae, mode)
        self.acse = GatedACSE(self)
        #: Filled by the gate: the principal, peer settings and allowed services.
        self.dv_principal: Any = None
        self.dv_peer: Any = None
        self.dv_services: frozenset[str] = frozenset()
        #: C-MOVE/C-GET plans keyed by Message ID (see handlers/_retrieve.py).
        self.dv_plans: dict[int, Any] = {}
        #: Given back when this (accepted) association ends.
        self.dv_ticket: _Ticket | None = None
        self._dv_wake = install_event_driven_reactors(self)

    def run(self) -> None:
        try:
            super().run()
        finally:
            if self.dv_ticket is not None:
                self.dv_ticket.done()

    def _run_reactor(self) -> None:
        """pynetdicom's acceptor loop, waiting on the wake event instead of sleeping 1 ms.

        The pause protocol is kept: ``_is_paused`` is true while the loop waits,
        so a handler's ``send_*`` on this association proceeds at once, and the
        loop passes ``_reactor_checkpoint`` before it takes any message.
        """
        self._is_paused = False
        while not self._kill:
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            self._dv_wake.clear()

            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, cast(int, context_id))

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return
            if self.acse.is_aborted():
                self.dul.receive_pdu(wait=False)  # EVT_ACSE_RECV fires for subscribers
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return
            if not self.dul.is_alive():
                self.kill()
                return
            if self.dul.idle_timer_expired():
                LOG.error("network timeout reached")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return
            if not msg:
                self._is_paused = True
                self._dv_wake.wait(IDLE_WAIT)

    def _serve_request(self, msg: Any, context_id: int) -> None:
        """C-FIND and C-STORE through the server's responders (``responders``: primitive type →
        callable returning whether it served the request); C-MOVE/C-GET planned before
        pynetdicom runs them."""
        planner = getattr(self._server, "retrieve_planner", None)
        context = self._accepted_cx.get(context_id)
        responder = getattr(self._server, "responders", {}).get(type(msg))
        if (responder is not None and context is not None
                and not self._sent_release and msg.is_valid_request):
            # pynetdicom's SCP bookkeeping (Association._serve_request) around ours
            self.dimse.cancel_req = {}
            self._is_paused = True
            try:
                if responder(self, msg, context):
                    return
            finally:
                self._is_paused = False
                self.dimse.cancel_req = {}
        if planner is not None and context is not None and isinstance(msg, C_MOVE | C_GET):
            refusal = planner(self, msg, context)
            if refusal is not None:
                rsp = type(msg)()
                rsp.MessageIDBeingRespondedTo = msg.MessageID
                rsp.AffectedSOPClassUID = msg.AffectedSOPClassUID
                rsp.Status = refusal.code
                rsp.ErrorComment = refusal.comment[:64]
                self.dimse.send_msg(rsp, context_id)
                return
        super()._serve_request(msg, context_id)

    def send_c_store(self, dataset: Any, msg_id: int = 1, priority: int = 2,
                     originator_aet: str | None = None,
                     originator_id: int | None = None) -> Any:
        """C-STORE; raw bytes for ``StoredInstance`` (PS3.4 C.4.3 C-GET sub-operations)."""
        if isinstance(dataset, StoredInstance):
            return send_stored_instance(self, dataset, msg_id, priority,
                                        originator_aet, originator_id)
        return super().send_c_store(dataset, msg_id, priority, originator_aet, originator_id)


class GatedRequestHandler(RequestHandler):
    """Completes the TLS handshake in the association thread, then runs the association."""

    def setup(self) -> None:
        sock = self.request
        if isinstance(sock, ssl.SSLSocket):
            server = cast("GatedServer", self.server)
            sock.settimeout(server.handshake_timeout)
            try:
                sock.do_handshake()
            except (OSError, ssl.SSLError, ValueError) as exc:
                server.on_tls_failure(self.client_address, exc)
                raise
            sock.settimeout(None)

    def _create_association(self) -> Association:
        assoc = GatedAssociation(self.ae, MODE_ACCEPTOR)
        assoc._server = self.server
        ticket: _Ticket | None = getattr(_connection, "ticket", None)
        if ticket is not None:
            assoc.dv_ticket = ticket
            ticket.handed_over = True
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        server = cast("GatedServer", self.server)
        sock = LimitedSocket(assoc, cast(socket.socket, self.request), server.max_pdu)
        assoc.set_socket(sock)
        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = self.server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        assoc.acceptor.supported_contexts = copy_contexts(self.server.contexts)
        assoc.requestor.address_info = self.remote
        for event in self.server._handlers:
            if event.is_intervention and self.server._handlers[event]:
                assoc.bind(event, *self.server._handlers[event])
            elif isinstance(event, evt.NotificationEvent):
                for handler in self.server._handlers[event]:
                    assoc.bind(event, handler[0], handler[1])  # type: ignore[index]
        return assoc


def copy_contexts(contexts: list[PresentationContext]) -> list[PresentationContext]:
    """Independent copies of the server's presentation contexts for one association.

    pynetdicom deep-copies them, which re-validates every UID (about 130 ms
    per association for the storage SOP classes); the attributes are
    immutable values apart from the transfer syntax list, so a shallow copy
    with its own list is as independent.
    """
    copies = []
    for context in contexts:
        twin = copy.copy(context)
        twin._transfer_syntax = list(context._transfer_syntax)
        copies.append(twin)
    return copies


class GatedServer(ThreadedAssociationServer):
    """Threaded association server with TCP_NODELAY, deferred TLS handshake and a gate."""

    daemon_threads = True
    #: Set by ``DimseServer`` after construction.
    gate: Callable[[Association], tuple[int, int, int] | None] | None = None
    tls_failure: Callable[[Any, BaseException], None] | None = None
    handshake_timeout: float = 30.0
    max_pdu: int = 0

    #: A listening socket bound by the serve process (worker processes), else None.
    inherited_socket: socket.socket | None = None
    #: This worker's slot in the shared load table (worker processes), else None.
    load: WorkerLoad | None = None

    def server_bind(self) -> None:
        if self.inherited_socket is None:
            super().server_bind()
            return
        cast(socket.socket, self.socket).close()  # the unbound one TCPServer made
        self.socket = self.inherited_socket
        self.server_address = self.inherited_socket.getsockname()

    def server_activate(self) -> None:
        if self.inherited_socket is None:
            super().server_activate()  # listen(); an inherited socket already listens

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Accept until the process ends; on an inherited socket, in a blocking ``accept``.

        Processes blocked in ``accept`` on one socket are woken one at a time, longest
        waiter first; with a load table, a worker holding more associations than another
        first waits its turn (``WorkerLoad.wait_turn``), so simultaneous connections
        spread evenly instead of going to whichever worker loops back first.
        """
        if self.inherited_socket is None:
            super().serve_forever(poll_interval)
            return
        while True:
            try:
                if self.load is not None:
                    self.load.wait_turn(self.inherited_socket)
                request, client_address = self.get_request()
            except (OSError, ValueError):
                if self.inherited_socket.fileno() < 0:
                    return  # closed at shutdown
                continue
            if self.load is not None:
                self.load.entered()
            if self.verify_request(request, client_address):
                try:
                    self.process_request(request, client_address)
                except Exception:  # noqa: BLE001 - one bad connection never stops the loop
                    self._release(None)
                    self.handle_error(request, client_address)
                    self.shutdown_request(request)
            else:
                self._release(None)
                self.shutdown_request(request)

    def _release(self, ticket: _Ticket | None) -> None:
        """Give a connection's place in the load back (``ticket`` None: one never issued)."""
        if ticket is not None:
            ticket.done()
        elif self.load is not None:
            self.load.left()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """The connection's thread: handshake, then its association (which gives the load
        back when it ends); a connection that fails before that gives it back here."""
        ticket = _Ticket(self.load) if self.load is not None else None
        _connection.ticket = ticket
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - as socketserver: log, close, go on
            self._release(ticket)
            self.handle_error(request, client_address)
            self.shutdown_request(request)
        else:
            if ticket is not None and not ticket.handed_over:
                ticket.done()
        finally:
            _connection.ticket = None

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept; TCP_NODELAY; wrap in TLS without handshaking (done in the thread)."""
        sock = cast(socket.socket, self.socket)
        client, address = sock.accept()
        set_nodelay(client)
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(
                client, server_side=True, do_handshake_on_connect=False)
        return client, address

    def on_tls_failure(self, address: Any, exc: BaseException) -> None:
        if self.tls_failure is not None:
            self.tls_failure(address, exc)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log a failed connection in one line (no traceback spam, no data)."""
        LOG.info("connection from %s closed during setup", client_address[0]
                 if isinstance(client_address, tuple) else client_address)


class GatedAE(ApplicationEntity):
    """AE whose outgoing associations (C-MOVE destinations) use TCP_NODELAY and raw sends."""

    def associate(self, *args: Any, **kwargs: Any) -> Association:  # type: ignore[override]
        """PS3.8 A-ASSOCIATE as requestor; ``StoredInstance`` objects then go out as stored."""
        assoc = super().associate(*args, **kwargs)
        sock = getattr(assoc.dul.socket, "socket", None)
        if sock is not None:
            set_nodelay(sock)
        plain_send = assoc.send_c_store

        def send_c_store(dataset: Any, msg_id: int = 1, priority: int = 2,
                         originator_aet: str | None = None,
                         originator_id: int | None = None) -> Any:
            if isinstance(dataset, StoredInstance):
                return send_stored_instance(assoc, dataset, msg_id, priority,
                                            originator_aet, originator_id)
            return plain_send(dataset, msg_id, priority, originator_aet, originator_id)

        assoc.send_c_store = send_c_store  # type: ignore[method-assign]
        return assoc
