"""Who is asking: the principal every door builds before calling a service."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

PrincipalKind = Literal["user", "ae", "token", "system"]


@dataclass(frozen=True)
class Principal:
    """An authenticated actor.

    ``id`` is unique and stable (user id, ``ae:<AE TITLE>``, ``system:<job>``)
    and goes into every audit record (HIPAA §164.312(a)(2)(i)).
    """

    id: str
    kind: PrincipalKind
    name: str
    roles: frozenset[str]
    #: Network address of the request (IP) for audit.
    address: str | None = None
    #: Token scopes (None = the roles' full permissions).
    scopes: frozenset[str] | None = None
    #: Door that authenticated it: dimse, dicomweb, rest, ui, cli, job.
    door: str = ""
    #: Study UIDs opened by break-the-glass, with their expiry.
    break_glass: tuple[tuple[str, datetime], ...] = field(default=())
    session_id: str | None = None
    #: Whether a second factor was verified for this session/credential.
    mfa_verified: bool = False

    @property
    def primary_role(self) -> str:
        return sorted(self.roles)[0] if self.roles else ""


def system_principal(job: str) -> Principal:
    """The archive acting on its own (background jobs, startup, CLI as operator)."""
    return Principal(id=f"system:{job}", kind="system", name=job, roles=frozenset({"system"}), door="job")
