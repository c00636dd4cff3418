"""Identity fixtures: a real database (SQLite and PostgreSQL), a keyring, a steerable clock."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from argon2 import PasswordHasher

import dicomvault.access.models  # noqa: F401 - registers the tables on Base.metadata
from dicomvault.access.identity import IdentityService
from dicomvault.access.principal import system_principal
from dicomvault.audit.events import AuditEvent
from dicomvault.config import Settings, load_settings
from dicomvault.index.base import Base
from dicomvault.index.db import make_engine, make_session_factory, read_only_engine

#: argon2id with a light cost so the suite stays fast (production uses the library default).
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
GOOD_PASSWORD = "correct horse battery staple 42"


class Clock:
    """An injectable clock the tests move forward instead of sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 9, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class AuditRecorder:
    batches: list[list[AuditEvent]] = field(default_factory=list)

    def __call__(self, events: list[AuditEvent], session: object = None) -> None:
        self.batches.append(list(events))

    @property
    def events(self) -> list[AuditEvent]:
        return [e for batch in self.batches for e in batch]

    def descriptions(self) -> list[str]:
        return [e.outcome_description for e in self.events]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def audit() -> AuditRecorder:
    return AuditRecorder()


@pytest.fixture
def engine(db_url: str) -> Iterator:
    eng = make_engine(db_url, pool_size=2)
    Base.metadata.create_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def settings() -> Settings:
    return load_settings(None, {"DICOMVAULT_HTTP__PUBLIC_URL": "https://pacs.test:8443"})


@pytest.fixture
def factory(engine):
    return make_session_factory(engine)


@pytest.fixture
def identity(factory, engine, keyring, settings, audit, clock) -> IdentityService:
    """The service as deployed: writes through ``factory``, per-request checks read-only."""
    read = make_session_factory(read_only_engine(engine))
    return IdentityService(factory, keyring, settings, audit, clock=clock, hasher=FAST_HASHER,
                           read_factory=read)


@pytest.fixture
def operator():
    return system_principal("cli")


def totp_now(secret: str, clock: Clock, offset_steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(clock.now + timedelta(seconds=30 * offset_steps))


def make_user(identity: IdentityService, operator, clock: Clock, username: str, roles: set[str],
              password: str = GOOD_PASSWORD, *, enrol: bool = True) -> dict:
    """Create a user, set the password and (for PHI roles) enrol TOTP; return its secrets."""
    created = identity.create_user(operator, username, roles)
    step = identity.authenticate_password(username, created.one_time_password, "10.0.0.1")
    assert step.status == "password_change_required"
    step = identity.change_password_with_challenge(step.challenge, password, "10.0.0.1")
    out = {"user_id": created.user_id, "password": password, "secret": None, "recovery": []}
    if step.status == "mfa_enrolment_required" and enrol:
        enrolment = identity.begin_mfa_enrolment(step.challenge)
        issued, codes = identity.confirm_mfa_enrolment(step.challenge, totp_now(enrolment.secret, clock),
                                                       "10.0.0.1")
        out.update(secret=enrolment.secret, recovery=codes, session=issued)
        clock.advance(seconds=30)  # the next login uses a fresh time step
    elif step.status == "ok":
        out["session"] = step.session
    return out


def login(identity: IdentityService, clock: Clock, user: dict, username: str,
          address: str = "10.0.0.1"):
    """Full password + TOTP login; returns the issued session."""
    step = identity.authenticate_password(username, user["password"], address)
    if step.status == "ok":
        return step.session
    assert step.status == "mfa_required"
    issued = identity.complete_mfa(step.challenge, totp_now(user["secret"], clock), address)
    clock.advance(seconds=30)
    return issued
