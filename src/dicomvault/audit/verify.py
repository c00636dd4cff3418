"""``audit verify``: prove the chain unbroken and not truncated.

Walks the records in ``seq`` order in batches and checks, for each one:
no gap in ``seq``; ``prev_hash`` equals the previous record's hash; the HMAC
over ``prev_hash || body`` matches; the body names the same ``seq``; the
search columns and subject rows agree with the body.  Then every checkpoint
(database and exported files) must carry a valid signature and match the
hash of the record it names — a chain shorter than a checkpoint is a
truncated tail.  The first failure is reported by record number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicomvault.audit.chain import GENESIS
from dicomvault.audit.checkpoint import Checkpoint, CheckpointService, load_exported, signature_valid
from dicomvault.audit.models import AuditRecord, AuditSubject
from dicomvault.audit.record import derive
from dicomvault.crypto.keyring import Keyring
from dicomvault.errors import TamperedError
from dicomvault.index.db import unit_of_work

BATCH = 2000


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: str = ""
    head_seq: int = 0
    checkpoint_seq: int | None = None
    checkpoints_checked: int = 0


def _columns_match(row: AuditRecord, body: dict[str, object]) -> bool:
    try:
        d = derive(body)  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError):
        return False
    return (
        row.event_time == d.event_time and row.recorded_at == d.recorded_at
        and row.event_code == d.event_code and row.action == d.action
        and row.outcome == d.outcome and row.user_id == d.user_id and row.address == d.address
        and row.door == d.door and row.instance_count == d.instance_count
    )


def _check_batch(
    session: Session, rows: list[AuditRecord], keyring: Keyring, expected: int, prev: bytes
) -> tuple[int | None, str, bytes, dict[int, bytes]]:
    hashes: dict[int, bytes] = {}
    lo, hi = rows[0].seq, rows[-1].seq
    subjects: dict[int, set[tuple[str, str]]] = {}
    for s in session.scalars(
        select(AuditSubject).where(AuditSubject.seq >= lo, AuditSubject.seq <= hi)
    ):
        subjects.setdefault(s.seq, set()).add((s.kind, s.value))
    for row in rows:
        if row.seq != expected:
            return expected, "record missing (deleted or renumbered)", prev, hashes
        if bytes(row.prev_hash) != prev:
            return row.seq, "broken link: previous hash does not match (reordered or inserted)", prev, hashes
        digest = keyring.hmac(keyring.audit_key, prev + row.body.encode("utf-8"))
        if digest != bytes(row.hash):
            return row.seq, "record content altered (HMAC mismatch)", prev, hashes
        try:
            body = json.loads(row.body)
        except ValueError:
            return row.seq, "record body unreadable", prev, hashes
        if body.get("seq") != row.seq:
            return row.seq, "record moved (body names another position)", prev, hashes
        if not _columns_match(row, body):
            return row.seq, "search columns altered (do not match the hashed body)", prev, hashes
        if subjects.get(row.seq, set()) != set(derive(body).subjects):
            return row.seq, "search subjects altered", prev, hashes
        prev = digest
        hashes[row.seq] = digest
        expected += 1
    return None, "", prev, hashes


def verify_chain(
    session_factory: sessionmaker[Session],
    keyring: Keyring,
    *,
    export_dir: str | Path | None = None,
) -> VerifyReport:
    """Verify every link and every checkpoint; name the first bad record (PS3.15 A.5 trail)."""
    service = CheckpointService(session_factory, keyring)
    try:
        checkpoints: list[Checkpoint] = service.stored() + (
            load_exported(export_dir) if export_dir else []
        )
    except TamperedError:
        return VerifyReport(False, 0, None, "an exported checkpoint file is malformed")
    for cp in checkpoints:
        if not signature_valid(cp, keyring):
            return VerifyReport(False, 0, cp.seq, f"checkpoint signature invalid ({cp.source})")
    wanted = {cp.seq for cp in checkpoints}
    seen: dict[int, bytes] = {}
    expected, prev, checked, last = 1, GENESIS, 0, 0
    with unit_of_work(session_factory) as session:
        while True:
            rows = list(session.scalars(
                select(AuditRecord).where(AuditRecord.seq > last).order_by(AuditRecord.seq).limit(BATCH)
            ))
            if not rows:
                break
            bad, reason, prev, hashes = _check_batch(session, rows, keyring, expected, prev)
            if bad is not None:
                return VerifyReport(False, checked, bad, reason, head_seq=rows[-1].seq)
            checked += len(rows)
            expected += len(rows)
            last = rows[-1].seq
            seen.update({s: h for s, h in hashes.items() if s in wanted})
            session.expunge_all()
    head = expected - 1
    best: int | None = None
    for cp in sorted(checkpoints, key=lambda c: c.seq):
        if cp.seq > head:
            return VerifyReport(
                False, checked, head + 1,
                f"chain truncated: checkpoint ({cp.source}) names record {cp.seq}, head is {head}",
                head_seq=head, checkpoint_seq=cp.seq, checkpoints_checked=len(checkpoints),
            )
        if seen.get(cp.seq) != cp.head_hash:
            return VerifyReport(
                False, checked, cp.seq, f"record differs from signed checkpoint ({cp.source})",
                head_seq=head, checkpoint_seq=cp.seq, checkpoints_checked=len(checkpoints),
            )
        best = cp.seq
    return VerifyReport(True, checked, None, "", head_seq=head, checkpoint_seq=best,
                        checkpoints_checked=len(checkpoints))
