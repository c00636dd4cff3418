"""De-identified export into research collections (PS3.15 Annex E as an archive service).

A principal with ``study:export`` copies studies through the de-identification
engine into a collection (project) that the ``researcher`` role can query and
retrieve — and nothing else (their scope is ``deidentified``).  Sources are
never changed.  Each export is audited as Data Export (110106); mappings kept
for re-identification are sealed under the source patient's DEK, and reading
them needs ``deid:reidentify`` and is audited.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import pydicom
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from dicomvault.access import permissions as perm
from dicomvault.access.policy import Policy, Resource
from dicomvault.access.principal import Principal, system_principal
from dicomvault.audit import events as ev
from dicomvault.crypto.keyring import Keyring
from dicomvault.deid.engine import deidentify
from dicomvault.deid.profile import DeidConfig
from dicomvault.errors import DicomVaultError, InvalidInputError, NotFoundError
from dicomvault.index.models import DeidMapping
from dicomvault.services.archive import ArchiveService
from dicomvault.services.auditing import AuditSink, actor, deny_event, refusal
from dicomvault.services.keys import PatientKeys


@dataclass
class ExportReport:
    project: str
    exported: int = 0
    #: (source SOP Instance UID, reason) of instances not released.
    refused: list[tuple[str, str]] = field(default_factory=list)
    collection_study_uids: set[str] = field(default_factory=set)


class DeidExportService:
    def __init__(self, archive: ArchiveService, factory: sessionmaker[Session], keyring: Keyring,
                 patient_keys: PatientKeys, policy: Policy, audit: AuditSink) -> None:
        self._archive = archive
        self._factory = factory
        self._keyring = keyring
        self._patient_keys = patient_keys
        self._policy = policy
        self._audit = audit

    def export(self, principal: Principal, study_uids: list[str], config: DeidConfig, *,
               door: str) -> ExportReport:
        """De-identify ``study_uids`` into the collection ``config.project`` (PS3.15 E.1)."""
        if not study_uids:
            raise InvalidInputError("no studies to export")
        for uid in study_uids:
            decision = self._policy.authorize(principal, perm.STUDY_EXPORT, Resource("study", study_uid=uid))
            if not decision.allowed:
                self._audit.append([deny_event(principal, door, perm.STUDY_EXPORT, uid)])
                raise refusal(decision)
        worker = system_principal("deid-export")
        report = ExportReport(config.project)
        for uid in study_uids:
            try:
                refs = self._archive.locate(worker, "STUDY", {"StudyInstanceUID": uid}, door="job",
                                            purpose=f"deid-export:{config.project}")
            except NotFoundError:
                raise NotFoundError("study not found") from None
            for ref in refs:
                source = pydicom.dcmread(io.BytesIO(self._archive.read_part10(ref)))
                result = deidentify(source, config, self._keyring.pseudonym_key)
                if not result.released:
                    reasons = "; ".join(f.reason for f in result.verification.findings)[:300]
                    report.refused.append((ref.sop_instance_uid, reasons or "verification failed"))
                    continue
                buf = io.BytesIO()
                result.dataset.save_as(buf, enforce_file_format=True)
                try:
                    stored = self._archive.ingest(worker, buf.getvalue(), door="job",
                                                  collection=config.project)
                except DicomVaultError as exc:
                    report.refused.append((ref.sop_instance_uid, exc.detail))
                    continue
                report.exported += 1
                report.collection_study_uids.add(stored.study_instance_uid)
                if config.keep_mapping:
                    self._keep_mappings(ref.patient_key_id, config.project, result.mappings)
            self._audit.append([self._export_event(principal, door, uid, refs, config, report)])
        return report

    def _keep_mappings(self, patient_key_id: str, project: str, mappings: list) -> None:  # type: ignore[type-arg]
        dek = self._patient_keys.dek_for(patient_key_id)
        if dek is None:
            return
        with self._factory() as s:
            known = {tuple(r) for r in s.execute(select(DeidMapping.kind, DeidMapping.pseudonym)
                                  .where(DeidMapping.project == project)).all()}
        new = [m for m in mappings if (m.kind, m.pseudonym) not in known]
        if not new:
            return
        try:
            with self._factory() as s, s.begin():
                for m in new:
                    s.add(DeidMapping(project=project, kind=m.kind, pseudonym=m.pseudonym[:128],
                                      patient_key_id=patient_key_id,
                                      enc_original=dek.seal(m.original.encode(),
                                                            f"deid:{project}:{m.kind}:{m.pseudonym}".encode())))
        except IntegrityError:
            pass  # a concurrent export stored the same pairs

    def reidentify(self, principal: Principal, project: str, pseudonym: str, *,
                   door: str) -> list[tuple[str, str]]:
        """Authorised re-identification: the originals behind ``pseudonym`` (audited Security Alert)."""
        decision = self._policy.authorize(principal, perm.REIDENTIFY, Resource("deid"))
        if not decision.allowed:
            self._audit.append([deny_event(principal, door, perm.REIDENTIFY, None)])
            raise refusal(decision)
        with self._factory() as s:
            rows = s.execute(select(DeidMapping).where(DeidMapping.project == project,
                                                       DeidMapping.pseudonym == pseudonym)).scalars().all()
        out: list[tuple[str, str]] = []
        for row in rows:
            dek = self._patient_keys.dek_for(row.patient_key_id)
            if dek is None:
                continue  # the source patient was erased: the mapping is shredded with it
            aad = f"deid:{project}:{row.kind}:{row.pseudonym}".encode()
            original = dek.open(row.enc_original, aad).decode()
            if row.kind == "patient_id" and "\\" in original:
                # The engine keys patients by "issuer\\id" (PS3.3 C.7.1.1 Issuer of Patient ID).
                issuer, _, original = original.partition("\\")
                if issuer:
                    out.append(("issuer_of_patient_id", issuer))
            out.append((row.kind, original))
        self._audit.append([ev.AuditEvent(
            event_id=ev.EventId.SECURITY_ALERT, action=ev.Action.READ,
            outcome=ev.Outcome.SUCCESS if out else ev.Outcome.MINOR_FAILURE,
            outcome_description="re-identification of a pseudonym",
            participants=actor(principal, source=False),
            objects=[ev.patient_object(r.patient_key_id, None, None) for r in rows[:1]],
            event_types=[ev.EventType.USE_OF_RESTRICTED_FUNCTION], door=door,
            context={"project": project, "found": len(out)})])
        return out

    def _export_event(self, principal: Principal, door: str, study_uid: str, refs: list, config: DeidConfig,  # type: ignore[type-arg]
                      report: ExportReport) -> ev.AuditEvent:
        """Data Export (110106), PS3.15 A.5.3.5: the source study leaves as a de-identified copy."""
        classes = tuple(sorted({r.sop_class_uid for r in refs}))
        patients = sorted({r.patient_key_id for r in refs})
        return ev.AuditEvent(
            event_id=ev.EventId.EXPORT, action=ev.Action.READ,
            outcome=ev.Outcome.SUCCESS if not report.refused else ev.Outcome.MINOR_FAILURE,
            outcome_description=f"de-identified export to collection {config.project}",
            participants=actor(principal, source=True),
            objects=[ev.study_object(study_uid, classes, len(refs)),
                     *(ev.patient_object(k, None, None) for k in patients)],
            door=door,
            context={"project": config.project, "exported": report.exported, "refused": len(report.refused),
                     "options": sorted(o.value for o in config.options)})
