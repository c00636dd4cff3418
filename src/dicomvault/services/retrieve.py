"""Retrieve: locate instances in scope, decrypt them, audit transfers.

Serves C-GET / C-MOVE (PS3.4 C.4.2, C.4.3) and WADO-RS/URI (PS3.18 10.4).
Every blob is verified (AES-GCM tags) while it is decrypted: a tampered
blob raises ``TamperedError``, is audited as a Security Alert and is never
served.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import ColumnElement, Engine, Select, and_, bindparam, select
from sqlalchemy.orm import Session, sessionmaker

from dicomvault.access import permissions as perm
from dicomvault.access.policy import Policy, Resource
from dicomvault.access.principal import Principal
from dicomvault.audit import events as ev
from dicomvault.crypto import envelope
from dicomvault.crypto.keyring import DataKey
from dicomvault.errors import InvalidInputError, NotFoundError, TamperedError
from dicomvault.index.models import Instance, Patient, Series, Study
from dicomvault.index.phi import metadata_aad
from dicomvault.services.auditing import AuditSink, actor, deny_event
from dicomvault.services.dicomfile import split_part10, valid_uid
from dicomvault.services.keys import DekCache
from dicomvault.services.types import InstanceRef
from dicomvault.storage.base import BlobStore

_LEVEL_KEYS = {
    "PATIENT": ("PatientID",),
    "STUDY": ("StudyInstanceUID",),
    "SERIES": ("StudyInstanceUID", "SeriesInstanceUID"),
    "IMAGE": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"),
}
_UID_COLUMNS = {
    "StudyInstanceUID": Study.study_uid,
    "SeriesInstanceUID": Series.series_uid,
    "SOPInstanceUID": Instance.sop_uid,
}


def _uid_list(keyword: str, value: str) -> list[str]:
    uids = [u.strip() for u in value.split("\\") if u.strip()]
    if not uids or not all(valid_uid(u) for u in uids):
        raise InvalidInputError(f"{keyword}: not a valid UID list")
    return uids


_LOCATE_COLUMNS = (
    select(Instance.sop_uid, Instance.sop_class_uid, Instance.transfer_syntax_uid,
           Instance.size, Instance.blob_key, Instance.number_of_frames,
           Series.series_uid, Study.study_uid, Patient.key_id, Patient.wrapped_dek)
    .select_from(Instance)
    .join(Series, Instance.series_id == Series.id)
    .join(Study, Series.study_id == Study.id)
    .join(Patient, Study.patient_id == Patient.id)
)


@lru_cache(maxsize=64)
def _locate_statement(shape: tuple[tuple[str, bool], ...]) -> Select[Any]:
    """The retrieve look-up for one form of keys (keyword, several values?); values bind
    as ``k<position>``.  Cached: every retrieve runs one."""
    conds: list[ColumnElement[bool]] = [Patient.wrapped_dek.is_not(None)]
    for position, (keyword, many) in enumerate(shape):
        column = Patient.key_id if keyword == "PatientID" else _UID_COLUMNS[keyword]
        value: Any = bindparam(f"k{position}", expanding=many)
        conds.append(column.in_(value) if many else column == value)
    return cast(Select[Any], _LOCATE_COLUMNS.where(and_(*conds)).order_by(Instance.id))


class Retriever:
    """Implements the retrieve half of ``ArchiveService``."""

    def __init__(self, factory: sessionmaker[Session], store: BlobStore, deks: DekCache,
                 policy: Policy, audit: AuditSink, patient_matcher: Any = None) -> None:
        self._factory = factory
        self._engine = cast(Engine, factory.kw["bind"])
        self._store = store
        self._deks = deks
        self._policy = policy
        self._audit = audit
        self._patient_matcher = patient_matcher

    def locate(self, principal: Principal, level: str, keys: dict[str, str], *, door: str,
               purpose: str) -> list[InstanceRef]:
        """Instances matching the unique keys of ``level`` that ``principal`` may read.

        PS3.4 C.4.2.2.1 / C.4.3.2.1: only unique keys (UIDs; Patient ID at
        PATIENT level in the Patient Root model).  Studies outside the
        principal's scope are treated as absent; nothing visible → NotFoundError.
        Audited as "Begin Transferring DICOM Instances" (110102).
        """
        if level not in _LEVEL_KEYS:
            raise InvalidInputError("unknown retrieve level")
        shape: list[tuple[str, bool]] = []
        params: dict[str, Any] = {}
        for keyword, value in keys.items():
            if not value:
                continue
            if keyword in _UID_COLUMNS:
                matches: list[str] = _uid_list(keyword, value)
            elif keyword == "PatientID" and level == "PATIENT":
                if self._patient_matcher is None:
                    raise InvalidInputError("PatientID retrieval unsupported")
                matches = list(self._patient_matcher(value))
            else:
                continue
            many = len(matches) != 1
            params[f"k{len(shape)}"] = matches if many else matches[0]
            shape.append((keyword, many))
        required = _LEVEL_KEYS[level][-1]
        if not keys.get(required):
            raise InvalidInputError(f"{required} is required at {level} level")
        with self._engine.connect() as conn:  # plain columns: no ORM entity loading
            rows = conn.execute(_locate_statement(tuple(shape)), params).all()
        refs: list[InstanceRef] = []
        denied: set[str] = set()
        allowed: set[str] = set()
        break_glass: set[str] = set()
        for (sop_uid, sop_class_uid, transfer_syntax_uid, size, blob_key, number_of_frames,
             series_uid, study_uid, key_id, _wrapped) in rows:
            if study_uid not in allowed and study_uid not in denied:
                decision = self._policy.authorize(
                    principal, perm.STUDY_READ, Resource("study", study_uid=study_uid, patient_key_id=key_id))
                (allowed if decision.allowed else denied).add(study_uid)
                if decision.allowed and decision.break_glass:
                    break_glass.add(study_uid)
                    self._audit.append([_break_glass_use(principal, door, study_uid)])
            if study_uid in allowed:
                refs.append(InstanceRef(
                    sop_instance_uid=sop_uid, sop_class_uid=sop_class_uid,
                    transfer_syntax_uid=transfer_syntax_uid, study_instance_uid=study_uid,
                    series_instance_uid=series_uid, size=size, blob_key=blob_key,
                    patient_key_id=key_id, number_of_frames=number_of_frames,
                    wrapped_dek=_wrapped))
        if denied:
            self._audit.append([deny_event(principal, door, perm.STUDY_READ, uid) for uid in sorted(denied)])
        if not refs:
            raise NotFoundError("no matching instances")
        event = self._transfer_event(principal, door, refs, ev.EventId.BEGIN_TRANSFERRING, purpose,
                                     ev.Outcome.SUCCESS)
        if break_glass:
            # The reason of access for disclosure reports (HIPAA accounting of disclosures).
            event.context["break_glass"] = sorted(break_glass)
        self._audit.append([event])
        return refs

    def _dek_of(self, ref: InstanceRef) -> DataKey | None:
        wrapped = ref.wrapped_dek if ref.wrapped_dek is not None else self._wrapped(ref.patient_key_id)
        return self._deks.get(ref.patient_key_id, wrapped)

    def stream_part10(self, ref: InstanceRef) -> Iterator[bytes]:
        """Decrypt the stored PS3.10 object chunk by chunk (verified)."""
        dek = self._dek_of(ref)
        if dek is None:
            raise NotFoundError("instance not found")
        fh = self._store.open(ref.blob_key)
        try:
            yield from envelope.decrypt_stream(dek, ref.sop_instance_uid.encode(), fh)
        except TamperedError:
            self._audit.append([_integrity_alert(ref)])
            raise
        finally:
            fh.close()

    def stored_metadata(self, refs: list[InstanceRef]) -> dict[str, bytes]:
        """SOP Instance UID → metadata stored at ingest (``dicomjson.encode_stored_metadata``).

        Instances stored without it (before revision 0002, or with no JSON
        form) are absent from the answer; their metadata comes from the blob.
        A sealed value that fails its tag is audited and left out, never served.
        """
        found: dict[str, bytes] = {}
        by_uid = {ref.sop_instance_uid: ref for ref in refs}
        uids = list(by_uid)
        for start in range(0, len(uids), 500):  # bound the IN list
            with self._engine.connect() as conn:
                rows = conn.execute(select(Instance.sop_uid, Instance.enc_metadata)
                                    .where(Instance.sop_uid.in_(uids[start:start + 500]))).all()
            for sop_uid, sealed in rows:
                ref = by_uid[sop_uid]
                if sealed is None:
                    continue
                dek = self._dek_of(ref)
                if dek is None:
                    continue
                try:
                    found[sop_uid] = dek.open(sealed, metadata_aad(sop_uid))
                except TamperedError:
                    self._audit.append([_integrity_alert(ref)])
        return found

    def read_part10(self, ref: InstanceRef) -> bytes:
        buf = io.BytesIO()
        for chunk in self.stream_part10(ref):
            buf.write(chunk)
        return buf.getvalue()

    def read_dataset(self, ref: InstanceRef) -> tuple[str, bytes]:
        """(transfer syntax, dataset bytes without file meta), byte-identical to what was received."""
        return split_part10(self.read_part10(ref))

    def record_transfer(self, principal: Principal, refs: list[InstanceRef], *, door: str,
                        destination: str, failed: int = 0, wait: bool = True) -> None:
        """Audit "DICOM Instances Transferred" (110104, action R) after sending.

        ``wait=False``: the record joins the next audit commit (or commits within
        ``audit.chain.DEFERRED_DELAY``) instead of committing on its own; the
        access itself was recorded durably by ``locate`` before any data left.
        """
        outcome = ev.Outcome.SUCCESS if failed == 0 else ev.Outcome.MINOR_FAILURE
        event = self._transfer_event(principal, door, refs, ev.EventId.INSTANCES_TRANSFERRED,
                                     destination, outcome, failed=failed)
        if wait:
            self._audit.append([event])
        else:
            self._audit.append_soon([event])

    def _wrapped(self, key_id: str) -> str | None:
        with self._factory() as s:
            return s.execute(select(Patient.wrapped_dek).where(Patient.key_id == key_id)).scalar()

    def _transfer_event(self, principal: Principal, door: str, refs: list[InstanceRef],
                        event_id: ev.EventId, destination: str, outcome: ev.Outcome,
                        failed: int = 0) -> ev.AuditEvent:
        by_study: dict[str, list[InstanceRef]] = {}
        for ref in refs:
            by_study.setdefault(ref.study_instance_uid, []).append(ref)
        objects = []
        for study_uid, items in by_study.items():
            classes = tuple(sorted({r.sop_class_uid for r in items}))
            objects.append(ev.study_object(study_uid, classes, len(items)))
        for key_id in sorted({r.patient_key_id for r in refs}):
            objects.append(ev.patient_object(key_id, None, None))
        return ev.AuditEvent(
            event_id=event_id,
            action=ev.Action.READ,
            outcome=outcome,
            outcome_description=f"{failed} failed" if failed else "",
            participants=actor(principal, source=False),
            objects=objects,
            door=door,
            context={"instances": len(refs), "destination": destination},
        )


def _integrity_alert(ref: InstanceRef) -> ev.AuditEvent:
    """Security Alert (110113): a stored object failed its integrity check."""
    return ev.AuditEvent(
        event_id=ev.EventId.SECURITY_ALERT,
        action=ev.Action.EXECUTE,
        outcome=ev.Outcome.SERIOUS_FAILURE,
        outcome_description="stored object failed integrity check (not served)",
        participants=[ev.ActiveParticipant(user_id="dicomvault", is_requestor=False,
                                           role=ev.RoleId.APPLICATION)],
        objects=[ev.study_object(ref.study_instance_uid), ev.patient_object(ref.patient_key_id, None, None)],
        event_types=[ev.EventType.OBJECT_SECURITY_ATTRIBUTES_CHANGED],
        door="job",
        context={"alert": "integrity", "sop_instance_uid": ref.sop_instance_uid},
    )


def _break_glass_use(principal: Principal, door: str, study_uid: str) -> ev.AuditEvent:
    """Security Alert (110113, Emergency Override) each time break-the-glass access is used."""
    return ev.AuditEvent(
        event_id=ev.EventId.SECURITY_ALERT,
        action=ev.Action.EXECUTE,
        outcome=ev.Outcome.SUCCESS,
        outcome_description="break-the-glass access used",
        participants=actor(principal, source=False),
        objects=[ev.study_object(study_uid)],
        event_types=[ev.EventType.EMERGENCY_OVERRIDE_STARTED],
        door=door,
        context={"alert": "break-glass"},
    )
