"""Liveness and readiness facts for ``/healthz`` and ``/readyz``.

Liveness is "the process answers".  Readiness is "requests can be served
*and audited*": the database answers and the audit head is readable (no audit,
no data), and the syslog backlog is below a bound (a long collector outage is
reported, though records stay safe in the outbox).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from dicomvault.audit.chain import AuditTrail, read_head
from dicomvault.audit.export.syslog import SyslogForwarder


@dataclass(frozen=True)
class Readiness:
    ready: bool
    checks: dict[str, bool] = field(default_factory=dict)


def readiness(trail: AuditTrail, forwarder: SyslogForwarder | None = None, *,
              max_syslog_backlog: int = 100_000) -> Readiness:
    """Checks for ``/readyz`` (200 when ``ready``, else 503); no PHI, booleans only."""
    checks: dict[str, bool] = {}
    try:
        with trail.session_factory() as s:
            s.execute(text("SELECT 1"))
            read_head(s)
            s.rollback()
        checks["database"] = checks["audit_chain"] = True
    except SQLAlchemyError:
        checks["database"] = checks["audit_chain"] = False
    if forwarder is not None:
        try:
            checks["syslog_backlog"] = forwarder.pending() < max_syslog_backlog
        except SQLAlchemyError:
            checks["syslog_backlog"] = False
    return Readiness(all(checks.values()), checks)
