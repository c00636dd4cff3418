"""Issue 4: many failed logins through the real login door give exactly one
Security Alert per rule window, and the account locks."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from dicomvault.access.principal import system_principal
from dicomvault.audit.models import AuditRecord

pytestmark = pytest.mark.integration


def _alerts(services, rule: str) -> list:
    with services.session_factory() as s:
        rows = s.scalars(select(AuditRecord).where(AuditRecord.event_code == "110113")).all()
        records = [services.audit.decode(r) for r in rows]
    return [r for r in records if r.context.get("rule") == rule]


def test_brute_force_login_one_alert_per_window_and_lockout(client, web_services):
    created = web_services.identity.create_user(system_principal("cli"), "victim", {"technologist"})
    statuses = []
    for _ in range(12):
        r = client.post("/api/auth/login", json={"username": "victim", "password": "not-the-password-1"})
        statuses.append(r.status_code)
        assert r.headers["content-type"].startswith("application/problem+json")
    assert set(statuses) <= {401, 429}
    assert len(_alerts(web_services, "brute_force_account")) == 1
    assert len(_alerts(web_services, "brute_force_address")) == 1
    # Locked: even the right password is refused now, and says nothing about why beyond "try later".
    r = client.post("/api/auth/login", json={"username": "victim", "password": created.one_time_password})
    assert r.status_code in (401, 429)
    assert "challenge" not in r.text
    assert web_services.audit.verify().ok
