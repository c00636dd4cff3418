"""Event-driven reactors for accepted associations (PS3.8 9.2 state machine, unchanged).

pynetdicom runs two polling loops per association: the DUL reactor sleeps
1 ms whenever it finds nothing to do, and the association reactor sleeps
1 ms before each look at its queues.  A C-STORE then waits up to ~1 ms for
the association thread to notice the complete message and up to ~1 ms more
for the DUL thread to notice the response to send; a C-FIND pays that per
pending response; and every idle association wakes its two threads 2,000
times a second, which on a busy server competes for the GIL.

Here both loops block instead: the DUL waits in ``select`` on the peer's
socket and on a wake-up socket pair that ``send_pdu`` writes to; the
association waits on an ``Event`` set whenever the DUL hands it a primitive
or a complete DIMSE message.  Timers (ARTIM, the network idle timeout) and
kill flags are still checked at least every ``IDLE_WAIT`` seconds.  The
state machine, the PDU handling and the pause protocol that lets a handler
send C-STORE sub-operations on its own association are pynetdicom's own.
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

from pynetdicom import evt
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import InvalidEventError
from pynetdicom.pdu import A_ABORT_RQ

from dicomvault.dimse.receive import ViewDimseProvider, pdata_from_pdu

LOG = logging.getLogger(__name__)

#: Longest a reactor blocks without re-checking its timers and kill flag (seconds).
IDLE_WAIT = 0.05


class WakingQueue(queue.Queue):  # type: ignore[type-arg]
    """A ``queue.Queue`` that calls ``wake`` after every ``put``."""

    def __init__(self, wake: Callable[[], None]) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake()


class EventDrivenDUL(DULServiceProvider):
    """DUL service provider (PS3.8 9) whose reactor blocks on the socket instead of polling."""

    def __init__(self, assoc: Any, notify_user: Callable[[], None]) -> None:
        super().__init__(assoc)
        # Socket objects (not raw fds): once closed, a late wake() fails instead of
        # writing into whatever file reuses the descriptor number.
        self._wake_rx, self._wake_tx = socket.socketpair()
        self._wake_rx.setblocking(False)
        self._wake_tx.setblocking(False)
        self._notify_user = notify_user
        self.to_provider_queue = WakingQueue(self.wake)
        self.to_user_queue = WakingQueue(notify_user)

    def wake(self) -> None:
        """Make the reactor look at its queues now."""
        try:
            self._wake_tx.send(b"\0")
        except OSError:  # full (a wake-up is already pending) or closed (reactor gone)
            pass

    def kill_dul(self) -> None:
        super().kill_dul()
        self.wake()

    def stop_dul(self) -> bool:
        """Stop the reactor if in Sta1, waking it so it exits now rather than after IDLE_WAIT."""
        if self.state_machine.current_state == "Sta1":
            self._kill_thread = True
            self.wake()
        return bool(super().stop_dul())

    def _decode_pdu(self, bytestream: bytearray) -> tuple[Any, str]:
        """A P-DATA-TF as views of the received PDU (``receive.pdata_from_pdu``, Evt10);
        other PDUs, or any PDU an event handler wants to see, as pynetdicom decodes them."""
        if (bytestream[:1] == b"\x04" and not self.assoc.get_handlers(evt.EVT_DATA_RECV)
                and not self.assoc.get_handlers(evt.EVT_PDU_RECV)):
            pdu = pdata_from_pdu(bytestream)
            if pdu is not None:
                return pdu, "Evt10"
        return super()._decode_pdu(bytestream)  # type: ignore[no-any-return]

    def run_reactor(self) -> None:
        """pynetdicom's DUL loop with the 1 ms sleep replaced by a blocking wait."""
        try:
            self._run_event_driven()
        finally:
            self._wake_rx.close()
            self._wake_tx.close()
            self._notify_user()  # the association notices the DUL has stopped

    def _run_event_driven(self) -> None:
        self._idle_timer.start()
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:  # noqa: BLE001 - same recovery as pynetdicom's reactor
                LOG.error("exception in the DUL reactor, aborting the association")
                LOG.exception(exc)
                abort_pdu = A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                if self.socket is not None:
                    self.socket.send(abort_pdu.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                self._wait_for_work()
                continue
            try:
                self.state_machine.do_action(event)
            except InvalidEventError:
                # e.g. the association's own A-ABORT request (Evt15) after a rejection,
                # while waiting for the peer to close (Sta13): nothing left to do.
                LOG.debug("ignoring %s in %s", event, self.state_machine.current_state)

    def _wait_for_work(self) -> None:
        """Block until the peer sends, the user queues a primitive, or IDLE_WAIT passes."""
        if not self.to_provider_queue.empty() or not self.event_queue.empty():
            return
        waitables: list[Any] = [self._wake_rx]
        assoc_socket = self.socket
        raw = getattr(assoc_socket, "socket", None)
        if raw is not None and getattr(assoc_socket, "_is_connected", False):
            if isinstance(raw, ssl.SSLSocket) and raw.pending():
                return  # decrypted bytes already buffered: select would not see them
            waitables.append(raw)
        try:
            ready, _, _ = select.select(waitables, [], [], IDLE_WAIT)
        except (OSError, ValueError):
            return  # socket closed under us: the transport check reports it
        if self._wake_rx in ready:
            try:
                while self._wake_rx.recv(4096):
                    pass
            except OSError:
                pass


def install_event_driven_reactors(assoc: Any) -> threading.Event:
    """Give an acceptor association an event-driven DUL and DIMSE queue; return its wake event.

    Must run before the association starts (the DUL thread is started by
    ``Association.run``).
    """
    wake = threading.Event()
    assoc.dul = EventDrivenDUL(assoc, wake.set)
    ViewDimseProvider.install(assoc.dimse)
    assoc.dimse.msg_queue = WakingQueue(wake.set)
    return wake
