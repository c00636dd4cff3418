"""Forward audit records to a syslog collector: RFC 5424 over TLS (RFC 5425), IHE ATNA ITI-20.

* Framing: RFC 5424 ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG``
  with facility 10 (security/authorization), severity 5 (notice) or 4
  (warning, for failures and Security Alerts), MSGID ``IHE+RFC-3881``, the
  record number in ``[meta sequenceId=".."]`` and the DICOM audit message
  (PS3.15 A.5.1 XML, UTF-8 with BOM) as MSG.  Each message is sent with RFC
  5425 octet counting (``MSG-LEN SP SYSLOG-MSG``).
* Durability: the chain writes one ``audit_syslog_outbox`` row per record in
  the same transaction as the record.  A row is deleted only once the message
  was written *and* the connection was still healthy ``confirm_after`` seconds
  later (syslog has no application acknowledgement: a collector that dies
  drops what it had not read, and we notice by the closed connection).
  Everything not confirmed is sent again after reconnecting, and survives a
  restart of either side.  Delivery is at-least-once: a collector may see a
  record twice and can drop duplicates by ``sequenceId``.
* Several nodes: on PostgreSQL only the holder of a session advisory lock
  forwards; the others stand by and take over when it stops or dies.
* Back-off: failed connections and sends are retried with exponential
  back-off (``backoff_initial`` doubling up to ``backoff_max``, with jitter).
"""

from __future__ import annotations

import logging
import random
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import Connection, delete, func, text, update
from sqlalchemy import select as sa_select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from dicomvault.audit.chain import AuditTrail
from dicomvault.audit.export import dicom_xml
from dicomvault.audit.models import AuditRecord, SyslogOutbox
from dicomvault.audit.record import StoredRecord
from dicomvault.index.base import utcnow
from dicomvault.index.db import unit_of_work

log = logging.getLogger(__name__)

FACILITY = 10  # security/authorization messages (RFC 5424 table 1), IHE ATNA
MSGID = "IHE+RFC-3881"
BOM = b"\xef\xbb\xbf"
_MAX_SEQUENCE_ID = 2_147_483_647
#: PostgreSQL session advisory lock held by the one forwarder allowed to send ("DVSYSLG").
FORWARDER_LOCK_KEY = 0x44_5653_5953_4C47


def severity(record: StoredRecord) -> int:
    """4 (warning) for failures and Security Alerts, else 5 (notice) — IHE ATNA ITI-20."""
    return 4 if record.outcome != 0 or record.event.code == "110113" else 5


def _field(value: str, limit: int) -> str:
    clean = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return clean or "-"


def format_message(
    record: StoredRecord, *, hostname: str, app_name: str = "dicomvault", procid: str = "-",
    site_id: str | None = None,
) -> bytes:
    """One RFC 5424 syslog message carrying the PS3.15 A.5.1 XML."""
    pri = FACILITY * 8 + severity(record)
    ts = record.time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    sd = f'[meta sequenceId="{record.seq % _MAX_SEQUENCE_ID or _MAX_SEQUENCE_ID}"]'
    header = (f"<{pri}>1 {ts} {_field(hostname, 255)} {_field(app_name, 48)} "
              f"{_field(procid, 128)} {MSGID} {sd} ")
    xml = dicom_xml.render(record, site_id=site_id, declaration=False)
    return header.encode("ascii") + BOM + xml


def frame(message: bytes) -> bytes:
    """RFC 5425 §4.3 octet-counting frame: ``MSG-LEN SP SYSLOG-MSG``."""
    return str(len(message)).encode("ascii") + b" " + message


def client_context(
    ca_file: str, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """TLS 1.2+ client context that verifies the collector (RFC 5425 §5.1), optional client cert."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


class SyslogForwarder:
    """Drain the outbox to one collector; run it in a thread with ``start``/``stop``."""

    def __init__(
        self,
        trail: AuditTrail,
        *,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext,
        hostname: str | None = None,
        site_id: str | None = None,
        batch: int = 200,
        backoff_initial: float = 0.5,
        backoff_max: float = 60.0,
        confirm_after: float = 1.0,
        poll_interval: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._trail = trail
        self._factory: sessionmaker[Session] = trail.session_factory
        self.host, self.port = host, port
        self._ctx = ssl_context
        self.hostname = hostname or socket.getfqdn()
        self.site_id = site_id
        self.batch = batch
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.confirm_after = confirm_after
        self.poll_interval = poll_interval
        self._clock = clock
        self._sock: ssl.SSLSocket | None = None
        self._in_flight: dict[int, float] = {}
        self._failures = 0
        self._retry_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_conn: Connection | None = None
        self.sent = 0
        self.confirmed = 0
        #: Times the connection was found dead or failed (each triggers a resend).
        self.connection_losses = 0

    # -- connection ----------------------------------------------------------

    def _connect(self) -> ssl.SSLSocket:
        raw = socket.create_connection((self.host, self.port), timeout=10)
        try:
            sock = self._ctx.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise
        sock.settimeout(10)
        return sock

    def _disconnect(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None
        # Unconfirmed messages may have been lost with the connection: send them again.
        self._in_flight.clear()

    def _alive(self) -> bool:
        """False when the collector closed or reset the connection."""
        sock = self._sock
        if sock is None:
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable and not sock.pending():
                return True
            sock.setblocking(False)
            try:
                data = sock.recv(4096)
            finally:
                sock.setblocking(True)
                sock.settimeout(10)
            return bool(data)  # collectors never talk back; b"" is EOF
        except (ssl.SSLWantReadError, BlockingIOError):
            return True
        except (OSError, ValueError):
            return False

    def _backoff(self) -> float:
        delay = min(self.backoff_max, self.backoff_initial * (2 ** min(self._failures, 16)))
        return delay * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not security

    # -- one round -------------------------------------------------------------

    def pending(self) -> int:
        """Records not yet confirmed delivered (the audit queue depth metric)."""
        with unit_of_work(self._factory) as s:
            return int(s.scalar(sa_select(func.count()).select_from(SyslogOutbox)) or 0)

    def _confirm(self) -> None:
        now = self._clock()
        done = [seq for seq, t in self._in_flight.items() if now - t >= self.confirm_after]
        if not done:
            return
        with unit_of_work(self._factory) as s:
            s.execute(delete(SyslogOutbox).where(SyslogOutbox.seq.in_(done)))
        for seq in done:
            del self._in_flight[seq]
        self.confirmed += len(done)

    def _due(self) -> list[tuple[int, bytes]]:
        with unit_of_work(self._factory) as s:
            q = (sa_select(SyslogOutbox.seq).where(SyslogOutbox.next_attempt_at <= utcnow())
                 .order_by(SyslogOutbox.seq).limit(self.batch + len(self._in_flight)))
            seqs = [x for x in s.scalars(q) if x not in self._in_flight][: self.batch]
            if not seqs:
                return []
            rows = s.scalars(sa_select(AuditRecord).where(AuditRecord.seq.in_(seqs))).all()
            by_seq = {r.seq: r for r in rows}
            out = []
            for seq in seqs:
                row = by_seq.get(seq)
                if row is None:  # record gone (tampering): verify reports it; nothing to send
                    s.execute(delete(SyslogOutbox).where(SyslogOutbox.seq == seq))
                    continue
                record = self._trail.decode(row)
                out.append((seq, frame(format_message(
                    record, hostname=self.hostname, site_id=self.site_id))))
            return out

    def _failed(self, seqs: list[int], exc: BaseException) -> None:
        self._failures += 1
        self.connection_losses += 1
        delay = self._backoff()
        self._retry_at = self._clock() + delay
        log.warning("syslog forwarding to %s:%s failed (%s); retry in %.1fs",
                    self.host, self.port, type(exc).__name__, delay)
        self._disconnect()
        if seqs:
            with unit_of_work(self._factory) as s:
                s.execute(update(SyslogOutbox).where(SyslogOutbox.seq.in_(seqs)).values(
                    attempts=SyslogOutbox.attempts + 1,
                    next_attempt_at=utcnow() + timedelta(seconds=delay),
                    last_error=type(exc).__name__[:200],
                ))

    def _is_leader(self) -> bool:
        """On PostgreSQL only one node forwards: the holder of a session advisory lock."""
        bind = self._factory.kw.get("bind")
        if bind is None or bind.dialect.name != "postgresql":
            return True
        if self._lock_conn is not None:
            try:
                self._lock_conn.exec_driver_sql("SELECT 1")
                self._lock_conn.commit()
                return True
            except SQLAlchemyError:
                self._release_leadership()
        conn = bind.connect()
        try:
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                    {"k": FORWARDER_LOCK_KEY}).scalar())
            conn.commit()
        except SQLAlchemyError:
            conn.invalidate()
            conn.close()
            return False
        if not got:
            conn.close()
            return False
        self._lock_conn = conn
        return True

    def _release_leadership(self) -> None:
        conn, self._lock_conn = self._lock_conn, None
        if conn is not None:
            conn.invalidate()  # drop the connection: the session lock goes with it
            conn.close()

    def drain_once(self) -> int:
        """Confirm, then send what is due.  Returns the number of messages written."""
        if not self._is_leader():
            return 0
        if self._sock is not None and not self._alive():
            self.connection_losses += 1
            self._disconnect()
        if self._sock is not None:
            self._confirm()
        if self._clock() < self._retry_at:
            return 0
        due = self._due()
        if not due:
            return 0
        try:
            if self._sock is None:
                self._sock = self._connect()
            for seq, data in due:
                self._sock.sendall(data)
                self._in_flight[seq] = self._clock()
                self.sent += 1
        except (OSError, ssl.SSLError) as exc:
            self._failed([seq for seq, _ in due], exc)
            return 0
        self._failures = 0
        return len(due)

    # -- background thread -------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="audit-syslog", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sent = self.drain_once()
            except Exception:  # noqa: BLE001 - the forwarder must outlive database hiccups
                log.exception("syslog forwarder round failed")
                sent = 0
            if not sent:
                self._stop.wait(self.poll_interval)

    def stop(self, flush_timeout: float = 5.0) -> None:
        """Stop the thread; try to confirm what is in flight, then close (TLS close_notify)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        deadline = self._clock() + flush_timeout
        while self._in_flight and self._clock() < deadline and self._alive():
            time.sleep(min(0.1, self.confirm_after))
            self._confirm()
        if self._sock is not None:
            try:
                self._sock.unwrap()
            except (OSError, ValueError):
                pass
        self._disconnect()
        self._release_leadership()
