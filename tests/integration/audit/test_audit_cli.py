"""``dicomvault audit verify|checkpoint|search|export|disclosures`` on an initialised archive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import xmlschema
from audit_factories import login_event, query_event
from sqlalchemy import delete
from typer.testing import CliRunner

from dicomvault.audit.export import dicom_xml
from dicomvault.audit.models import AuditRecord, AuditSubject
from dicomvault.cli.audit import app
from dicomvault.config import load_settings
from dicomvault.index.db import unit_of_work

pytestmark = pytest.mark.integration


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    from dicomvault.services.context import build_services
    from dicomvault.services.setup import initialise

    cfg = tmp_path / "dicomvault.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "data"}"\n'
                   f'[audit]\ncheckpoint_export_dir = "{tmp_path / "worm"}"\n')
    settings = load_settings(cfg, {})
    initialise(settings, {})
    services = build_services(settings, environ={})
    services.audit.append([login_event(True, user="alice"), query_event(), login_event(False)])
    services.close()
    return cfg


def _run(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_cli_verify_checkpoint_then_truncation_is_caught(archive: Path, tmp_path: Path) -> None:
    from dicomvault.services.context import build_services

    code, out = _run("verify", "--config", str(archive))
    assert code == 0 and "audit chain OK" in out
    code, out = _run("search", "--config", str(archive), "--event", "audit-log-used", "--json")
    assert '"outcome": 0' in out and "system:cli" in out  # the verification itself was audited
    code, out = _run("checkpoint", "--config", str(archive))
    assert code == 0 and "checkpoint at record" in out
    assert len(list((tmp_path / "worm").glob("checkpoint-*.json"))) == 1
    services = build_services(load_settings(archive, {}), environ={})
    head, _ = services.audit.head()
    with unit_of_work(services.session_factory) as s:
        s.execute(delete(AuditSubject).where(AuditSubject.seq == head))
        s.execute(delete(AuditRecord).where(AuditRecord.seq == head))
    services.close()
    code, out = _run("verify", "--config", str(archive))
    assert code == 1
    assert f"record {head}" in out and "truncated" in out


def test_cli_search_json_filters_by_event(archive: Path) -> None:
    code, out = _run("search", "--config", str(archive), "--event", "user-authentication", "--json")
    assert code == 0, out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["outcome"] for r in rows] == [0, 4]
    assert all(r["event_code"] == "110114" for r in rows)


def test_cli_export_xml_validates_and_fhir_is_ndjson(archive: Path, tmp_path: Path) -> None:
    xml_out, fhir_out = tmp_path / "audit.xml", tmp_path / "audit.ndjson"
    assert _run("export", "--config", str(archive), "--format", "xml", "--out", str(xml_out))[0] == 0
    assert _run("export", "--config", str(archive), "--format", "fhir", "--out", str(fhir_out))[0] == 0
    schema = xmlschema.XMLSchema(str(dicom_xml.SCHEMA_PATH))
    messages = xml_out.read_text().splitlines()
    assert len(messages) >= 3
    for line in messages:
        schema.validate(line)
    events = [json.loads(line) for line in fhir_out.read_text().splitlines()]
    assert len(events) >= 3 and all(e["resourceType"] == "AuditEvent" for e in events)


def test_cli_disclosures_runs_for_a_patient_key(archive: Path) -> None:
    code, out = _run("disclosures", "--config", str(archive), "--patient-key", "pk-none", "--json")
    assert code == 0, out
    assert json.loads(out) == []
