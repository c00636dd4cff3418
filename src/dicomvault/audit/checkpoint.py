"""Signed checkpoints of the chain head (Ed25519), periodic and on shutdown.

A checkpoint says "record ``seq`` had hash ``head_hash``", signed with the
keyring's checkpoint key.  Each one is stored in the database and, when an
export folder is configured, written there as a read-only file that is never
overwritten (point the folder at write-once storage: WORM mount, S3 object
lock).  ``audit verify`` checks the chain against every checkpoint it can
find, so deleting the tail of the chain is detected.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicomvault.audit.chain import read_head
from dicomvault.audit.models import AuditCheckpoint
from dicomvault.audit.record import parse_time
from dicomvault.crypto.keyring import Keyring
from dicomvault.errors import TamperedError
from dicomvault.index.base import utcnow
from dicomvault.index.db import unit_of_work

log = logging.getLogger(__name__)
_DOMAIN = "dicomvault-audit-checkpoint/v1"


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    head_hash: bytes
    created_at: datetime
    node_id: str
    public_key: bytes
    signature: bytes
    source: str = "database"

    def message(self) -> bytes:
        return signed_message(self.seq, self.head_hash, self.created_at, self.node_id)

    def to_json(self) -> str:
        return json.dumps({
            "format": _DOMAIN,
            "seq": self.seq,
            "head_hash": self.head_hash.hex(),
            "created_at": self.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "node_id": self.node_id,
            "public_key": base64.b64encode(self.public_key).decode(),
            "signature": base64.b64encode(self.signature).decode(),
        }, sort_keys=True, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str) -> Checkpoint:
        try:
            doc = json.loads(text)
            if doc.get("format") != _DOMAIN:
                raise ValueError("format")
            return cls(
                seq=int(doc["seq"]), head_hash=bytes.fromhex(doc["head_hash"]),
                created_at=parse_time(doc["created_at"]), node_id=str(doc["node_id"]),
                public_key=base64.b64decode(doc["public_key"]),
                signature=base64.b64decode(doc["signature"]), source=source,
            )
        except (ValueError, KeyError, TypeError):
            raise TamperedError("malformed audit checkpoint file") from None


def signed_message(seq: int, head_hash: bytes, created_at: datetime, node_id: str) -> bytes:
    """The bytes an Ed25519 checkpoint signature covers."""
    when = created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{_DOMAIN}|{seq}|{head_hash.hex()}|{when}|{node_id}".encode()


def signature_valid(cp: Checkpoint, keyring: Keyring) -> bool:
    """True when signed by *this* keyring's checkpoint key (a foreign key is not trusted)."""
    if cp.public_key != keyring.checkpoint_public_key:
        return False
    return Keyring.verify_checkpoint(keyring.checkpoint_public_key, cp.signature, cp.message())


class CheckpointService:
    """Emit, store and export signed checkpoints of the chain head."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        keyring: Keyring,
        *,
        node_id: str = "dicomvault",
        export_dir: str | Path | None = None,
    ) -> None:
        self._factory = session_factory
        self._keyring = keyring
        self.node_id = node_id
        self.export_dir = Path(export_dir) if export_dir else None

    def emit(self) -> Checkpoint | None:
        """Sign the current head; store and export it.  None when the chain is empty."""
        with unit_of_work(self._factory) as session:
            seq, head = read_head(session)
            if seq == 0:
                return None
            now = utcnow()
            sig = self._keyring.sign_checkpoint(signed_message(seq, head, now, self.node_id))
            cp = Checkpoint(seq, head, now, self.node_id, self._keyring.checkpoint_public_key, sig)
            session.add(AuditCheckpoint(
                seq=seq, head_hash=head, created_at=now, node_id=self.node_id,
                public_key=cp.public_key, signature=sig,
            ))
        if self.export_dir is not None:
            export_checkpoint(cp, self.export_dir)
        return cp

    def stored(self) -> list[Checkpoint]:
        with unit_of_work(self._factory) as session:
            rows = session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.id)).all()
            return [
                Checkpoint(r.seq, r.head_hash, r.created_at, r.node_id, r.public_key, r.signature)
                for r in rows
            ]


def export_checkpoint(cp: Checkpoint, folder: Path) -> Path:
    """Write one checkpoint file, create-only (O_EXCL), fsynced, then made read-only."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = cp.created_at.strftime("%Y%m%dT%H%M%S%fZ")
    path = folder / f"checkpoint-{cp.seq:012d}-{stamp}-{cp.node_id}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(cp.to_json())
        fh.flush()
        os.fsync(fh.fileno())
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def load_exported(folder: str | Path) -> list[Checkpoint]:
    """Every checkpoint file in an export folder (malformed files raise ``TamperedError``)."""
    root = Path(folder)
    if not root.is_dir():
        return []
    return [
        Checkpoint.from_json(p.read_text(encoding="utf-8"), source=f"file:{p.name}")
        for p in sorted(root.glob("checkpoint-*.json"))
    ]


class CheckpointScheduler:
    """Emit a checkpoint every ``interval`` seconds and once more on ``stop()`` (shutdown)."""

    def __init__(self, service: CheckpointService, interval_seconds: float) -> None:
        self._service = service
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.emitted = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="audit-checkpoint", daemon=True)
            self._thread.start()

    def _emit(self) -> None:
        try:
            if self._service.emit() is not None:
                self.emitted += 1
        except Exception:  # noqa: BLE001 - keep the scheduler alive; the next tick retries
            log.exception("audit checkpoint failed")

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._emit()

    def stop(self) -> None:
        """Stop the timer and emit a final checkpoint of the head at shutdown."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self._emit()
