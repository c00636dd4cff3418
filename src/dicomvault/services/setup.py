"""First-run initialisation and KEK rotation (``dicomvault init`` / ``keys rotate``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select

from dicomvault.access.principal import system_principal
from dicomvault.audit import events as ev
from dicomvault.config import Settings
from dicomvault.crypto import pki
from dicomvault.crypto.keyring import WrappedKey, create_key_files, rotate_kek_file
from dicomvault.errors import ConfigurationError
from dicomvault.index.db import make_engine
from dicomvault.index.migrate import upgrade
from dicomvault.index.models import Patient


@dataclass(frozen=True)
class InitResult:
    kek_location: str
    admin_password: str | None


def is_initialised(settings: Settings) -> bool:
    return (settings.keys_dir / "root.json").exists()


def initialise(settings: Settings, environ: Mapping[str, str], *, admin_user: str = "admin") -> InitResult:
    """Create data folder, KEK + root secret, local CA, server certificate, schema, first admin.

    Refuses to run twice (keys would be replaced and every stored object lost).
    The admin's one-time password is returned once and never stored in clear.
    """
    if is_initialised(settings):
        raise ConfigurationError(f"{settings.data_dir} is already initialised")
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(settings.data_dir, 0o700)
    from_env = bool(settings.keys.kek_env)
    if from_env and not environ.get(settings.keys.kek_env):
        raise ConfigurationError(f"keys.kek_env names {settings.keys.kek_env}, which is not set")
    if from_env:
        import secrets

        from dicomvault.crypto.keyring import LocalKek, _store_root

        kek = LocalKek.from_base64(environ[settings.keys.kek_env])
        settings.keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _store_root(settings.keys_dir, kek, secrets.token_bytes(32))
        location = f"environment variable {settings.keys.kek_env}"
    else:
        create_key_files(settings.keys_dir, settings.kek_file)
        location = str(settings.kek_file)
    if not settings.tls_cert_file.exists():
        ca = pki.CertPaths(settings.tls_ca_file, settings.tls_ca_key_file)
        if not settings.tls_ca_file.exists():
            ca = pki.create_local_ca(settings.tls_ca_file, settings.tls_ca_key_file)
        names = tuple(dict.fromkeys((*pki.default_server_names(), settings.http.host, settings.dimse.host)))
        pki.issue_certificate(ca, "localhost", settings.tls_cert_file, settings.tls_key_file,
                              server=True, client=True, names=names)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    engine.dispose()

    from dicomvault.services.context import build_services

    services = build_services(settings, environ=environ)
    try:
        operator = system_principal("init")
        created = services.identity.create_user(operator, admin_user, {"admin"}, "Administrator")
        services.audit.append([ev.AuditEvent(
            event_id=ev.EventId.SECURITY_ALERT, action=ev.Action.EXECUTE, outcome=ev.Outcome.SUCCESS,
            outcome_description="archive initialised (keys, CA, schema, first administrator)",
            participants=[ev.ActiveParticipant(user_id=operator.id, is_requestor=True,
                                               role=ev.RoleId.APPLICATION_LAUNCHER)],
            event_types=[ev.EventType.SECURITY_CONFIGURATION], door="cli")])
    finally:
        services.close()
    return InitResult(location, created.one_time_password)


def rotate_kek(settings: Settings, environ: Mapping[str, str]) -> tuple[str, str, int]:
    """New KEK; every patient DEK re-wrapped in one transaction; data untouched (DESIGN.md)."""
    if settings.keys.kek_env:
        raise ConfigurationError("the KEK comes from the environment: rotate it in your KMS")
    keyring, old_id, new_id = rotate_kek_file(settings.keys_dir, settings.kek_file)
    from dicomvault.services.context import build_services

    services = build_services(settings, keyring=keyring, environ=environ)
    count = 0
    try:
        with services.session_factory() as s, s.begin():
            for patient in s.execute(select(Patient).where(Patient.wrapped_dek.is_not(None))).scalars():
                assert patient.wrapped_dek is not None
                patient.wrapped_dek = keyring.rewrap(WrappedKey.from_str(patient.wrapped_dek)).to_str()
                count += 1
            services.audit.append([ev.AuditEvent(
                event_id=ev.EventId.SECURITY_ALERT, action=ev.Action.EXECUTE, outcome=ev.Outcome.SUCCESS,
                outcome_description=f"KEK rotated; {count} data keys re-wrapped",
                participants=[ev.ActiveParticipant(user_id="system:cli", is_requestor=True,
                                                   role=ev.RoleId.APPLICATION_LAUNCHER)],
                event_types=[ev.EventType.SECURITY_CONFIGURATION], door="cli",
                context={"old_kek": old_id, "new_kek": new_id})], session=s)
    finally:
        services.close()
    return old_id, new_id, count
