"""Wiring: build every service once at startup from the settings (no globals)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from dicomvault.access.assignments import IndexAssignments
from dicomvault.access.identity import IdentityService
from dicomvault.access.policy import Policy
from dicomvault.audit.chain import AuditTrail
from dicomvault.audit.metrics import Metrics
from dicomvault.audit.runtime import AuditRuntime
from dicomvault.config import Settings
from dicomvault.crypto.keyring import Keyring, open_keyring
from dicomvault.errors import ConfigurationError
from dicomvault.index.db import make_engine, make_session_factory, read_only_engine
from dicomvault.index.models import Study
from dicomvault.services.archive import ArchiveService
from dicomvault.services.deid_export import DeidExportService
from dicomvault.services.keys import DekCache, PatientKeys
from dicomvault.services.offload import OffloadedIngest
from dicomvault.storage.base import BlobStore
from dicomvault.storage.filesystem import FilesystemBlobStore


@dataclass
class Services:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    read_factory: sessionmaker[Session]
    keyring: Keyring
    store: BlobStore
    deks: DekCache
    patient_keys: PatientKeys
    policy: Policy
    audit: AuditTrail
    archive: ArchiveService
    identity: IdentityService
    deid_export: DeidExportService
    metrics: Metrics
    audit_runtime: AuditRuntime
    extras: dict[str, Any] = field(default_factory=dict)
    #: ``ArchiveService.ingest`` in the worker processes (``services.offload``), for STOW-RS;
    #: set by ``serve`` when it starts ``dimse.workers`` >= 2 of them.
    ingest_offload: OffloadedIngest | None = None

    def close(self) -> None:
        try:
            self.audit.flush()  # records queued by append_soon
        finally:
            self.engine.dispose()


def _discard(_value: object) -> None:
    return None


def load_keyring(settings: Settings, environ: Mapping[str, str] | None = None) -> Keyring:
    """Open the keyring the settings point at (fails closed if keys are missing)."""
    return open_keyring(settings.keys_dir, settings.kek_file, settings.keys.kek_env,
                        os.environ if environ is None else environ)


def make_blob_store(settings: Settings) -> BlobStore:
    if settings.storage.backend == "filesystem":
        return FilesystemBlobStore(settings.blob_root)
    # The S3 store (scale-out) is not part of this release: refuse clearly at start.
    raise ConfigurationError("storage.backend: only 'filesystem' is available in this release")


def build_services(settings: Settings, *, keyring: Keyring | None = None,
                   environ: Mapping[str, str] | None = None) -> Services:
    """Construct the service graph; the schema must already be migrated (``init``/``migrate``)."""
    keyring = keyring or load_keyring(settings, environ)
    engine = make_engine(settings.database_url, pool_size=settings.database.pool_size)
    factory = make_session_factory(engine)
    read_factory = make_session_factory(read_only_engine(engine))
    store = make_blob_store(settings)
    deks = DekCache(keyring, settings.archive.dek_cache_size, settings.archive.dek_cache_ttl_seconds)
    patient_keys = PatientKeys(read_factory, deks)
    metrics = Metrics()
    audit = AuditTrail(factory, keyring, patient_keys.dek_for, node_id=settings.dimse.ae_title,
                       metrics=metrics,
                       checkpoint_export_dir=settings.audit.checkpoint_export_dir or None)
    # Alert rules are installed now (they act on every append); the runtime's
    # background threads (syslog forwarder, checkpoints) start with ``serve``.
    audit_runtime = AuditRuntime(audit, settings, metrics=metrics)

    def is_deidentified(study_uid: str) -> bool:
        from sqlalchemy import select

        with read_factory() as s:
            return bool(s.execute(select(Study.deidentified).where(Study.study_uid == study_uid)).scalar())

    policy = Policy(IndexAssignments(read_factory, is_deidentified))
    archive = ArchiveService(factory, read_factory, keyring, store, deks, policy, audit,
                             on_duplicate=settings.archive.on_duplicate,
                             max_query_results=settings.archive.max_query_results, metrics=metrics)
    identity = IdentityService(factory, keyring, settings,
                               lambda events, session: _discard(audit.append(events, session)),
                               policy=policy, read_factory=read_factory)
    deid_export = DeidExportService(archive, factory, keyring, patient_keys, policy, audit)
    return Services(settings, engine, factory, read_factory, keyring, store, deks, patient_keys,
                    policy, audit, archive, identity, deid_export, metrics, audit_runtime)
