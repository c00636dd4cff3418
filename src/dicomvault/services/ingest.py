"""Ingest one instance (PS3.4 B.2 Storage Service semantics, PS3.18 10.5 STOW).

Path (DESIGN.md): parse header → validate → authorize → patient row and DEK
→ encrypt blob (streaming envelope) → temp + fsync + rename → in one
transaction: study/series/instance rows, blind tokens, audit record → commit
→ ack.  The blob is written before the index transaction so the database
write lock is held only briefly; if the transaction fails the blob is
removed, and a crash in between leaves only an unreferenced blob that the
startup sweep deletes (never an index row without its blob).
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

from pydicom.dataset import Dataset
from sqlalchemy import Engine, Table, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from dicomvault.access import permissions as perm
from dicomvault.access.policy import Policy, Resource
from dicomvault.access.principal import Principal
from dicomvault.audit import events as ev
from dicomvault.crypto import envelope
from dicomvault.crypto.keyring import DataKey, Keyring
from dicomvault.dicomjson import encode_stored_metadata
from dicomvault.errors import ConflictError, InvalidInputError, NotFoundError, TamperedError
from dicomvault.index.base import utcnow
from dicomvault.index.db import make_session_factory, read_only_engine
from dicomvault.index.group_commit import GroupCommitter
from dicomvault.index.models import Instance, Patient, SearchToken, Series, Study
from dicomvault.index.phi import PHI_FIELDS, PhiField, field_aad, metadata_aad
from dicomvault.index.prepared import Prepared
from dicomvault.services.auditing import AuditSink, actor, deny_event, refusal
from dicomvault.services.dicomfile import ParsedInstance, parse_instance, split_part10
from dicomvault.services.keys import DekCache
from dicomvault.services.types import IngestResult
from dicomvault.storage.base import BlobInfo, BlobStore, StagedWrite

#: The tables behind the models, for Core statements on the hot path.
_PATIENTS = cast(Table, Patient.__table__)
_STUDIES = cast(Table, Study.__table__)
_SERIES = cast(Table, Series.__table__)
_INSTANCES = cast(Table, Instance.__table__)

# Hot-path statements built once and run on the driver cursor (``index.prepared``):
# every ingest runs them, and SQLAlchemy's execution path costs more than the driver.
_SELECT_PATIENT = Prepared(select(_PATIENTS.c.id, _PATIENTS.c.key_id, _PATIENTS.c.wrapped_dek).where(
    _PATIENTS.c.identity_token == bindparam("b_token")))
#: An instance already stored under the SOP Instance UID: what ``_same_content`` compares with.
_SELECT_STORED = Prepared(
    select(_INSTANCES.c.content_mac, _INSTANCES.c.blob_key, _PATIENTS.c.key_id, _PATIENTS.c.wrapped_dek)
    .join(_SERIES, _SERIES.c.id == _INSTANCES.c.series_id)
    .join(_STUDIES, _STUDIES.c.id == _SERIES.c.study_id)
    .join(_PATIENTS, _PATIENTS.c.id == _STUDIES.c.patient_id)
    .where(_INSTANCES.c.sop_uid == bindparam("b_sop")))
#: ``instances.content_mac`` of rows whose content is compared by decrypting the stored object.
_MAC_ON_DEMAND = ""
# Row locks (PostgreSQL) serialise counter updates per study; SQLite's
# BEGIN IMMEDIATE already serialises writers.
_LOCK_STUDY = Prepared(select(_STUDIES.c.id, _STUDIES.c.patient_id, _STUDIES.c.deidentified).where(
    _STUDIES.c.study_uid == bindparam("b_study")).with_for_update())
_LOCK_SERIES = Prepared(select(_SERIES.c.id, _SERIES.c.study_id).where(
    _SERIES.c.series_uid == bindparam("b_series")).with_for_update())
_SELECT_INSTANCE = Prepared(select(_INSTANCES.c.id, _INSTANCES.c.series_id, _INSTANCES.c.blob_key).where(
    _INSTANCES.c.sop_uid == bindparam("b_sop")))
_INSERT_INSTANCE = Prepared(insert(_INSTANCES))
_REPLACE_INSTANCE = Prepared(update(_INSTANCES).where(_INSTANCES.c.id == bindparam("b_id")))
_COUNT_IN_SERIES = Prepared(update(_SERIES).where(_SERIES.c.id == bindparam("b_id")).values(
    num_instances=_SERIES.c.num_instances + 1))
_COUNT_IN_STUDY = Prepared(update(_STUDIES).where(_STUDIES.c.id == bindparam("b_id")).values(
    num_instances=_STUDIES.c.num_instances + 1, updated_at=bindparam("b_now")))


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    text = str(value).strip("\x00 ")
    return text or None


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        number = int(value) if value not in (None, "") else None
        return number if number is None or -(2**31) <= number < 2**31 else None
    except (TypeError, ValueError):
        return None


def _date(ds: Dataset, keyword: str) -> str | None:
    """DA for range matching: YYYYMMDD (ACR-NEMA ``YYYY.MM.DD`` accepted), else None."""
    value = (_text(ds, keyword) or "").replace(".", "")
    return value if len(value) == 8 and value.isdigit() else None


def _time(ds: Dataset, keyword: str) -> str | None:
    """TM as HHMMSS.FFFFFF (colons of old encodings removed), else None."""
    value = (_text(ds, keyword) or "").replace(":", "")
    head = value.split(".")[0]
    return value[:16] if head.isdigit() and len(head) in (2, 4, 6) else None


def _code(ds: Dataset, keyword: str, length: int) -> str | None:
    value = _text(ds, keyword)
    return value[:length] if value else None


def identity_token(keyring: Keyring, ds: Dataset) -> str:
    """Blind token identifying the patient: (issuer, ID), else name + birth date."""
    pid = _text(ds, "PatientID")
    issuer = _text(ds, "IssuerOfPatientID") or ""
    if pid:
        return keyring.blind.exact("patient.identity", f"id\x1f{issuer}\x1f{pid}")
    name = _text(ds, "PatientName") or ""
    dob = _text(ds, "PatientBirthDate") or ""
    return keyring.blind.exact("patient.identity", f"anon\x1f{name.upper()}\x1f{dob}")


@dataclass
class _InstanceRow:
    """What the index transaction writes for a new instance, prepared before it starts."""

    #: Instance columns known before the blob is durable.
    values: dict[str, Any]
    #: The durable blob write in progress.
    blob: Future[BlobInfo]
    #: The "Instances Transferred" audit event of a successful store.
    event: ev.AuditEvent


_OVERWRITTEN = "overwritten: replaced a different object (configured)"


class Ingestor:
    """Implements ``ArchiveService.ingest``."""

    def __init__(self, factory: sessionmaker[Session], keyring: Keyring, store: BlobStore,
                 deks: DekCache, policy: Policy, audit: AuditSink,
                 on_duplicate: Literal["reject", "overwrite"] = "reject",
                 read_factory: sessionmaker[Session] | None = None) -> None:
        self._factory = factory
        # Look-ups before the write transaction (duplicate check, patient key) must not
        # take SQLite's write lock (BEGIN IMMEDIATE): concurrent ingests would queue on it.
        self._read_factory = read_factory or _read_only(factory)
        self._read_engine = cast(Engine, self._read_factory.kw["bind"])
        self._keyring = keyring
        self._store = store
        self._deks = deks
        self._policy = policy
        self._audit = audit
        self._on_duplicate = on_duplicate
        self._blob_writer = _BLOB_WRITER
        # Concurrent ingests (associations, STOW requests) share transactions and
        # their commit's fsync instead of queueing on the write lock one by one.
        self._committer = GroupCommitter(factory)

    # -- public -----------------------------------------------------------
    def ingest(self, principal: Principal, data: bytes, *, door: str,
               dataset_transfer_syntax: str | None = None,
               source_ae: str | None = None, collection: str | None = None) -> IngestResult:
        """Store one instance; durable and audited before returning (PS3.4 B.2.3).

        ``collection`` names the de-identified research collection a new study
        belongs to (set only by the de-identified export service).
        """
        try:
            parsed = parse_instance(data, dataset_transfer_syntax=dataset_transfer_syntax,
                                    source_ae=source_ae)
        except InvalidInputError as exc:
            self._audit.append([self._import_event(principal, door, None, ev.Outcome.SERIOUS_FAILURE,
                                                   exc.detail)])
            raise
        decision = self._policy.authorize(principal, perm.STUDY_WRITE,
                                          Resource("study", study_uid=parsed.study_uid))
        if not decision.allowed:
            self._audit.append([deny_event(principal, door, perm.STUDY_WRITE, parsed.study_uid)])
            raise refusal(decision)
        patient, existing = self._look_up(parsed)
        patient_id, key_id, dek = patient
        # The blob is written here; making it durable (fsync, rename: a wait with the
        # GIL released) runs on another thread beside the rest of the preparation
        # (metadata, audit event).  Writing it there too only made the
        # two threads take turns on the GIL.
        blob_key = f"{uuid.uuid4().hex[:2]}/{uuid.uuid4().hex}.dvb"
        staged = self._stage_blob(blob_key, parsed, key_id, dek)
        pending = self._blob_writer.submit(staged.persist)
        try:
            if existing is not None and self._same_content(existing, parsed):
                self._audit.append([self._import_event(
                    principal, door, parsed, ev.Outcome.SUCCESS, "duplicate: identical object already stored",
                    key_id=key_id)])
                self._discard(pending)
                return IngestResult(parsed.sop_instance_uid, parsed.sop_class_uid, parsed.study_uid,
                                    "duplicate", series_instance_uid=parsed.series_uid)
            if existing is not None and self._on_duplicate == "reject":
                self._audit.append([self._import_event(
                    principal, door, parsed, ev.Outcome.SERIOUS_FAILURE,
                    "refused: different object under an existing SOP Instance UID", key_id=key_id)])
                raise ConflictError("a different object is already stored under this SOP Instance UID")
            metadata = encode_stored_metadata(parsed.dataset)
            ds = parsed.dataset
            row = _InstanceRow(
                values={
                    "sop_class_uid": parsed.sop_class_uid,
                    "instance_number": _int(ds, "InstanceNumber"),
                    "number_of_frames": _int(ds, "NumberOfFrames") or 1,
                    "rows": _int(ds, "Rows"), "columns": _int(ds, "Columns"),
                    "transfer_syntax_uid": parsed.transfer_syntax_uid,
                    "blob_key": blob_key, "size": len(parsed.part10), "content_mac": _MAC_ON_DEMAND,
                    "enc_metadata": (dek.seal(metadata, metadata_aad(parsed.sop_instance_uid))
                                     if metadata is not None else None),
                },
                blob=pending,
                event=self._import_event(principal, door, parsed, ev.Outcome.SUCCESS, "", key_id=key_id),
            )
            # The blob must be durable before the row naming it commits; waiting here,
            # not inside the transaction, keeps the index's write lock (shared by every
            # door and worker process) free while the fsync runs.
            pending.result()
            status = self._commit_with_retry(parsed, (patient_id, key_id, dek), row, collection)
        except BaseException:
            self._discard(pending)
            raise
        return IngestResult(parsed.sop_instance_uid, parsed.sop_class_uid, parsed.study_uid, status,
                            series_instance_uid=parsed.series_uid)

    # -- steps ------------------------------------------------------------
    def _look_up(self, parsed: ParsedInstance) -> tuple[tuple[int, str, DataKey], Any]:
        """(patient id, key id, DEK) — the patient created if new — and any stored instance
        under the SOP Instance UID (what ``_same_content`` needs), read in one unit of work."""
        token = identity_token(self._keyring, parsed.dataset)
        existing: Any = None  # the instance stored under the SOP Instance UID, if any
        for attempt in range(3):
            # A Core connection, not a Session: this runs on every ingest.
            with self._read_engine.connect() as conn:
                row = _SELECT_PATIENT.first(conn, {"b_token": token})
                if attempt == 0:
                    existing = _SELECT_STORED.first(conn, {"b_sop": parsed.sop_instance_uid})
            if row is not None and row.wrapped_dek is not None:
                dek = self._deks.get(row.key_id, row.wrapped_dek)
                assert dek is not None
                return (row.id, row.key_id, dek), existing
            try:
                return self._create_patient(token, parsed.dataset, erased_row=row is not None), existing
            except IntegrityError:
                continue  # a concurrent ingest created it first: read it
        raise ConflictError("patient record could not be created")

    def _same_content(self, existing: Any, parsed: ParsedInstance) -> bool:
        """Whether the object stored under this SOP Instance UID has exactly these dataset bytes.

        Rows stored by earlier versions carry a content MAC (HMAC of the dataset bytes);
        newer ones are compared with the stored object itself, decrypted: the MAC cost
        0.4 ms of CPU on every ingest for a comparison only a repeated UID needs.
        """
        if existing.content_mac:
            mac = hmac.new(self._keyring.index_key, parsed.dataset_bytes, hashlib.sha256).hexdigest()
            return hmac.compare_digest(existing.content_mac, mac)
        dek = self._deks.get(existing.key_id, existing.wrapped_dek)
        if dek is None:  # the stored object's patient was erased: nothing left to match
            return False
        try:
            with self._store.open(existing.blob_key) as fh:
                stored = b"".join(envelope.decrypt_stream(dek, parsed.sop_instance_uid.encode(), fh))
        except (NotFoundError, TamperedError):  # unreadable: not the same (fixity reports it)
            return False
        return split_part10(stored)[1] == parsed.dataset_bytes

    def _create_patient(self, token: str, ds: Dataset, *, erased_row: bool) -> tuple[int, str, DataKey]:
        dek, wrapped = self._keyring.new_data_key()
        key_id = str(uuid.uuid4())
        with self._factory() as s, s.begin():
            if erased_row:
                # A patient erased earlier sends new data: a new identity and key;
                # the shredded record keeps its (unreadable) history.
                s.execute(update(Patient).where(Patient.identity_token == token)
                          .values(identity_token=f"erased-{uuid.uuid4().hex[:24]}"))
            patient = Patient(key_id=key_id, identity_token=token, wrapped_dek=wrapped.to_str(),
                              sex=_code(ds, "PatientSex", 16))
            s.add(patient)
            s.flush()
            self._write_phi(s, "patient", patient, patient.key_id, dek, ds)
            patient_id = patient.id
        self._deks.put(key_id, dek)
        return patient_id, key_id, dek

    def _write_phi(self, s: Session, level: str, row: Patient | Study | Series, row_uid: str,
                   dek: DataKey, ds: Dataset) -> None:
        blind = self._keyring.blind
        tokens: set[str] = set()
        for field in PHI_FIELDS:
            if field.level != level:
                continue
            value = _text(ds, field.keyword)
            if value is None:
                continue
            setattr(row, field.column, dek.seal_text(value, field_aad(field, row_uid)))
            tokens.update(_tokens_for(blind, field, value))
        s.add_all(SearchToken(token=t, level=level, row_id=row.id) for t in tokens)

    def _stage_blob(self, blob_key: str, parsed: ParsedInstance, key_id: str, dek: DataKey) -> StagedWrite:
        """The encrypted envelope written under ``blob_key``, not yet durable."""
        staged = self._store.stage(blob_key)
        try:
            envelope.encrypt_stream(dek, parsed.sop_instance_uid.encode(), [parsed.part10],
                                    staged.write, key_id=key_id)
        except BaseException:
            staged.discard()
            raise
        return staged

    def _discard(self, pending: Future[BlobInfo]) -> None:
        """Remove the blob of an ingest that will not commit (once it is durable)."""
        try:
            stored = pending.result()
        except Exception:  # noqa: BLE001 - persisting failed: the temp file is gone already
            return
        self._store.delete(stored.key)

    def _commit_with_retry(self, parsed: ParsedInstance, patient: tuple[int, str, DataKey],
                           row: _InstanceRow, collection: str | None) -> Literal["stored", "overwritten"]:
        # On PostgreSQL two ingests may create the same study or series at once;
        # the loser's unique violation rolls back cleanly and it retries.
        for attempt in range(3):
            try:
                return self._commit(parsed, patient, row, collection)
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _commit(self, parsed: ParsedInstance, patient: tuple[int, str, DataKey], row: _InstanceRow,
                collection: str | None = None) -> Literal["stored", "overwritten"]:
        """Index the instance in a (group) commit that happens only after its blob is durable."""
        status, old_blob = self._committer.run(
            lambda s: self._index(s, parsed, patient, row, collection))
        if old_blob:
            self._store.delete(old_blob)
        return status

    def _index(self, s: Session, parsed: ParsedInstance, patient: tuple[int, str, DataKey],
               row: _InstanceRow, collection: str | None,
               ) -> tuple[Literal["stored", "overwritten"], str | None]:
        """The instance's index rows and audit record in the caller's transaction;
        returns its status and the blob it replaced (to delete once committed)."""
        ds = parsed.dataset
        patient_id, _, dek = patient
        old_blob: str | None = None
        # The common case (study and series exist, new instance) runs as prebuilt Core
        # statements on the session's connection; ORM objects are only built to create
        # a study or series.
        conn = s.connection()
        study_row = _LOCK_STUDY.first(conn, {"b_study": parsed.study_uid})
        if study_row is None:
            study = Study(patient_id=patient_id, study_uid=parsed.study_uid,
                          study_date=_date(ds, "StudyDate"), study_time=_time(ds, "StudyTime"),
                          deidentified=collection is not None, project=collection)
            s.add(study)
            s.flush()
            self._write_phi(s, "study", study, study.study_uid, dek, ds)
            study_id = study.id
        elif study_row.patient_id != patient_id:
            raise ConflictError("the study belongs to a different patient")
        elif study_row.deidentified != (collection is not None):
            raise ConflictError("identified and de-identified data cannot share a study")
        else:
            study_id = study_row.id
        series_row = _LOCK_SERIES.first(conn, {"b_series": parsed.series_uid})
        if series_row is None:
            series_id = self._create_series(s, study_id, parsed, dek)
        elif series_row.study_id != study_id:
            raise ConflictError("the series belongs to a different study")
        else:
            series_id = series_row.id

        existing = _SELECT_INSTANCE.first(conn, {"b_sop": parsed.sop_instance_uid})
        status: Literal["stored", "overwritten"] = "stored"
        event = row.event
        if existing is not None:
            if self._on_duplicate != "overwrite" or existing.series_id != series_id:
                raise ConflictError("a different object is already stored under this SOP Instance UID")
            old_blob = existing.blob_key
            status = "overwritten"
            event = replace(event, outcome_description=_OVERWRITTEN)
        else:
            _COUNT_IN_SERIES.execute(conn, {"b_id": series_id})
            _COUNT_IN_STUDY.execute(conn, {"b_id": study_id, "b_now": utcnow()})
        self._audit.append([event], session=s)
        # The blob is durable by now (ingest waited for it before the transaction).
        values = dict(row.values, blob_sha256=row.blob.result().sha256)
        if existing is not None:
            _REPLACE_INSTANCE.execute(conn, dict(values, b_id=existing.id))
        else:
            _INSERT_INSTANCE.execute(conn, dict(values, series_id=series_id,
                                                sop_uid=parsed.sop_instance_uid, created_at=utcnow()))
        return status, old_blob

    def _create_series(self, s: Session, study_id: int, parsed: ParsedInstance, dek: DataKey) -> int:
        ds = parsed.dataset
        series = Series(study_id=study_id, series_uid=parsed.series_uid,
                        modality=_code(ds, "Modality", 16), series_number=_int(ds, "SeriesNumber"),
                        series_date=_date(ds, "SeriesDate"), series_time=_time(ds, "SeriesTime"),
                        body_part=_code(ds, "BodyPartExamined", 64))
        s.add(series)
        s.flush()
        self._write_phi(s, "series", series, series.series_uid, dek, ds)
        current = s.execute(select(Study.modalities).where(Study.id == study_id)).scalar_one()
        modalities = set(filter(None, current.split("\\")))
        if series.modality:
            modalities.add(series.modality)
        s.execute(update(Study).where(Study.id == study_id).values(
            num_series=Study.num_series + 1, modalities="\\".join(sorted(modalities))))
        return series.id

    # -- audit --------------------------------------------------------------
    def _import_event(self, principal: Principal, door: str, parsed: ParsedInstance | None,
                      outcome: ev.Outcome, description: str, *, key_id: str | None = None) -> ev.AuditEvent:
        """PS3.15 A.5.3.2 "DICOM Instances Transferred" (110104, action C) for a store."""
        objects: list[ev.ParticipantObject] = []
        if parsed is not None:
            objects.append(ev.study_object(parsed.study_uid, (parsed.sop_class_uid,), 1))
            if key_id is not None:
                ds = parsed.dataset
                objects.append(ev.patient_object(key_id, _text(ds, "PatientID"),
                                                 _text(ds, "PatientName")))
        return ev.AuditEvent(
            event_id=ev.EventId.INSTANCES_TRANSFERRED,
            action=ev.Action.CREATE,
            outcome=outcome,
            outcome_description=description,
            participants=actor(principal, source=True),
            objects=objects,
            door=door,
            context={"instances": 1},
        )


#: Durable blob writes of all ingests (threads wait on fsync; shared, sized for I/O not CPU).
_BLOB_WRITER = ThreadPoolExecutor(max_workers=16, thread_name_prefix="dv-blob-write")


def _read_only(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """A session factory on the same pool for read-only units of work (no write lock)."""
    bind = factory.kw.get("bind")
    return make_session_factory(read_only_engine(bind)) if bind is not None else factory


def _tokens_for(blind: object, field: PhiField, value: str) -> set[str]:
    from dicomvault.crypto.blind import BlindIndex

    assert isinstance(blind, BlindIndex)
    norm = field.normalise(value)
    tokens = {blind.exact(field.token_field, norm)}
    if field.kind in ("id", "pn", "text"):
        tokens.update(blind.prefix_tokens(field.token_field, norm))
    words = field.words(value)
    if words:
        tokens.update(blind.word_prefix_tokens(field.token_field, words))
    return tokens
