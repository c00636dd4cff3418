"""The archive service: ingest, query, retrieve, delete (DESIGN.md services layer).

Doors call only this façade (and never storage or the index directly); every
method authorizes through the policy and audits before returning.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from dicomvault.access import permissions as perm
from dicomvault.access.policy import Policy, Resource
from dicomvault.access.principal import Principal
from dicomvault.audit import events as ev
from dicomvault.crypto.keyring import Keyring
from dicomvault.errors import NotFoundError
from dicomvault.index.models import Instance, Patient, SearchToken, Series, Study
from dicomvault.services.auditing import AuditSink, actor, deny_event, refusal
from dicomvault.services.ingest import Ingestor
from dicomvault.services.keys import DekCache
from dicomvault.services.query import Searcher
from dicomvault.services.retrieve import Retriever
from dicomvault.services.types import FindQuery, FindResult, IngestResult, InstanceRef
from dicomvault.storage.base import BlobStore


@dataclass
class FixityReport:
    checked: int
    bad: list[str]  # SOP Instance UIDs whose stored bytes changed
    missing: list[str]


class ArchiveService:
    def __init__(self, factory: sessionmaker[Session], read_factory: sessionmaker[Session],
                 keyring: Keyring, store: BlobStore, deks: DekCache, policy: Policy,
                 audit: AuditSink, *, on_duplicate: Literal["reject", "overwrite"] = "reject",
                 max_query_results: int = 10_000, metrics: Any = None) -> None:
        self._factory = factory
        self._metrics = metrics
        self._store = store
        self._policy = policy
        self._audit = audit
        self._keyring = keyring
        self._ingestor = Ingestor(factory, keyring, store, deks, policy, audit, on_duplicate)
        self._searcher = Searcher(read_factory, keyring, deks, policy, audit, max_query_results)
        self._retriever = Retriever(read_factory, store, deks, policy, audit,
                                    patient_matcher=self.patient_key_ids)

    # -- ingest / query / retrieve -----------------------------------------
    def ingest(self, principal: Principal, data: bytes, *, door: str,
               dataset_transfer_syntax: str | None = None, source_ae: str | None = None,
               collection: str | None = None) -> IngestResult:
        """Store one instance (PS3.4 B.2.3 / PS3.18 10.5); see ``services.ingest``."""
        result = self._ingestor.ingest(principal, data, door=door,
                                       dataset_transfer_syntax=dataset_transfer_syntax, source_ae=source_ae,
                                       collection=collection)
        if self._metrics is not None and result.status != "duplicate":
            self._metrics.instance_stored(len(data))
        return result

    def find(self, principal: Principal, query: FindQuery, *, door: str) -> FindResult:
        """Search (PS3.4 C.6 / PS3.18 10.6); see ``services.query``."""
        return self._searcher.find(principal, query, door=door)

    def locate(self, principal: Principal, level: str, keys: dict[str, str], *, door: str,
               purpose: str) -> list[InstanceRef]:
        """Instances to send for a retrieve (PS3.4 C.4.2/C.4.3, PS3.18 10.4)."""
        return self._retriever.locate(principal, level, keys, door=door, purpose=purpose)

    def read_dataset(self, ref: InstanceRef) -> tuple[str, bytes]:
        return self._retriever.read_dataset(ref)

    def stored_metadata(self, refs: list[InstanceRef]) -> dict[str, bytes]:
        """Metadata stored at ingest for ``refs`` (PS3.18 10.4.1.1.2), by SOP Instance UID."""
        return self._retriever.stored_metadata(refs)

    def read_part10(self, ref: InstanceRef) -> bytes:
        return self._retriever.read_part10(ref)

    def stream_part10(self, ref: InstanceRef) -> Iterator[bytes]:
        return self._retriever.stream_part10(ref)

    def record_transfer(self, principal: Principal, refs: list[InstanceRef], *, door: str,
                        destination: str, failed: int = 0, wait: bool = True) -> None:
        self._retriever.record_transfer(principal, refs, door=door, destination=destination,
                                        failed=failed, wait=wait)

    def patient_key_ids(self, patient_id: str) -> list[str]:
        """Patient key ids whose Patient ID equals ``patient_id`` (through the blind index).

        Internal lookup for retrieves, reports and GDPR requests; callers authorize first.
        """
        token = self._keyring.blind.exact("patient.PatientID", patient_id.strip())
        with self._factory() as s:
            return list(s.execute(
                select(Patient.key_id).join(SearchToken, SearchToken.row_id == Patient.id)
                .where(SearchToken.level == "patient", SearchToken.token == token)
            ).scalars())

    # -- delete ---------------------------------------------------------------
    def delete_study(self, principal: Principal, study_uid: str, *, door: str) -> int:
        """Delete a study: rows and tokens in one audited transaction (110105), then blobs."""
        with self._factory() as s:
            study = s.execute(select(Study).where(Study.study_uid == study_uid)).scalar()
            key_id = s.execute(select(Patient.key_id).where(Patient.id == study.patient_id)).scalar() \
                if study else None
        decision = self._policy.authorize(principal, perm.STUDY_DELETE,
                                          Resource("study", study_uid=study_uid, patient_key_id=key_id))
        if not decision.allowed:
            self._audit.append([deny_event(principal, door, perm.STUDY_DELETE, study_uid)])
            raise refusal(decision)
        if study is None:
            raise NotFoundError("study not found")
        with self._factory() as s, s.begin():
            series_ids = list(s.execute(select(Series.id).where(Series.study_id == study.id)).scalars())
            blobs = list(s.execute(select(Instance.blob_key).where(Instance.series_id.in_(series_ids)))
                         .scalars())
            s.execute(delete(Instance).where(Instance.series_id.in_(series_ids)))
            s.execute(delete(SearchToken).where(SearchToken.level == "series",
                                                SearchToken.row_id.in_(series_ids)))
            s.execute(delete(Series).where(Series.id.in_(series_ids)))
            s.execute(delete(SearchToken).where(SearchToken.level == "study",
                                                SearchToken.row_id == study.id))
            s.execute(delete(Study).where(Study.id == study.id))
            self._audit.append([ev.AuditEvent(
                event_id=ev.EventId.STUDY_DELETED, action=ev.Action.DELETE, outcome=ev.Outcome.SUCCESS,
                participants=actor(principal, source=True),
                objects=[ev.study_object(study_uid, (), len(blobs)),
                         ev.patient_object(key_id or "", None, None)],
                door=door, context={"instances": len(blobs)})], session=s)
        for blob in blobs:
            self._store.delete(blob)
        return len(blobs)

    # -- maintenance ------------------------------------------------------------
    def sweep_orphan_blobs(self) -> int:
        """Delete blobs no index row references (left by a crash between write and commit).

        Run at startup, before any listener accepts work (a blob being written
        by a live ingest is not yet referenced either).
        """
        with self._factory() as s:
            referenced = set(s.execute(select(Instance.blob_key)).scalars())
        removed = 0
        sweep_temp = getattr(self._store, "sweep_temporary", None)
        if sweep_temp:
            removed += sweep_temp()
        for key in list(self._store.keys()):
            if key not in referenced:
                self._store.delete(key)
                removed += 1
        return removed

    def fixity_check(self) -> FixityReport:
        """Recompute each blob's SHA-256 against the index (HIPAA §164.312(c)(2))."""
        with self._factory() as s:
            rows = s.execute(select(Instance.sop_uid, Instance.blob_key, Instance.blob_sha256,
                                    Series.series_uid, Study.study_uid)
                             .join(Series, Instance.series_id == Series.id)
                             .join(Study, Series.study_id == Study.id)).all()
        bad: list[str] = []
        missing: list[str] = []
        for sop_uid, blob_key, digest, _series_uid, _study_uid in rows:
            try:
                if self._store.sha256(blob_key) != digest:
                    bad.append(sop_uid)
            except NotFoundError:
                missing.append(sop_uid)
        if bad or missing:
            self._audit.append([ev.AuditEvent(
                event_id=ev.EventId.SECURITY_ALERT, action=ev.Action.EXECUTE,
                outcome=ev.Outcome.SERIOUS_FAILURE,
                outcome_description=f"fixity check failed: {len(bad)} modified, {len(missing)} missing",
                participants=[ev.ActiveParticipant(user_id="dicomvault", is_requestor=True,
                                                   role=ev.RoleId.APPLICATION)],
                door="job", context={"alert": "integrity", "modified": bad[:100], "missing": missing[:100]})])
        return FixityReport(len(rows), bad, missing)
