"""``dicomvault audit …``: verify the chain, search, export, checkpoint, disclosures.

The CLI runs on the server as the operator (principal ``system:cli``); every
read of the log is itself audited (Audit Log Used), and a failed
verification raises a Security Alert.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from dicomvault.access.principal import system_principal
from dicomvault.cli.common import ConfigOption, settings_from
from dicomvault.errors import DicomVaultError

app = typer.Typer(help="Audit trail: verify, search, export, checkpoint, disclosures.",
                  no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)



@contextmanager
def _services(config: Path | None) -> Iterator[Any]:
    from dicomvault.services.context import build_services

    settings = settings_from(config)
    try:
        services = build_services(settings, environ=os.environ)
    except DicomVaultError as exc:
        err_console.print(f"[red]cannot open the archive:[/red] {exc.detail}")
        raise typer.Exit(1) from None
    try:
        if settings.audit.checkpoint_export_dir and not services.audit.checkpoint_export_dir:
            services.audit.checkpoint_export_dir = settings.audit.checkpoint_export_dir
        yield services
    finally:
        services.close()


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter("use ISO 8601, e.g. 2026-03-02T10:00:00Z") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@app.command()
def verify(
    config: ConfigOption = None,
    export_dir: Annotated[str | None, typer.Option(
        help="Folder of exported checkpoints to check against (default: audit.checkpoint_export_dir)."
    )] = None,
) -> None:
    """Prove the chain unbroken; name the first bad record (exit 1) and raise a Security Alert."""
    from dicomvault.audit.events import Outcome
    from dicomvault.audit.query import AuditQueryService

    with _services(config) as services:
        report = services.audit.verify(export_dir=export_dir)
        AuditQueryService(services.audit, services.policy).record_use(
            system_principal("cli"), "verify",
            outcome=Outcome.SUCCESS if report.ok else Outcome.SERIOUS_FAILURE,
            description=f"verified {report.checked} records")
    if report.ok:
        cp = f", anchored at checkpoint {report.checkpoint_seq}" if report.checkpoint_seq else ""
        console.print(f"[green]audit chain OK[/green]: {report.checked} records{cp} "
                      f"({report.checkpoints_checked} checkpoints checked)")
        return
    err_console.print(f"[red]audit chain BROKEN[/red] at record {report.first_bad_seq}: "
                      f"{report.reason} ({report.checked} records verified before it)")
    raise typer.Exit(1)


@app.command()
def checkpoint(config: ConfigOption = None) -> None:
    """Sign the current chain head (Ed25519) and export it to the write-once folder."""
    with _services(config) as services:
        cp = services.audit.checkpoint()
    if cp is None:
        console.print("audit chain is empty: nothing to sign")
        return
    console.print(f"checkpoint at record {cp.seq}: {cp.head_hash.hex()}")


def _filters(since: str | None, until: str | None, user: str | None, patient_key: str | None,
             study: str | None, event: str | None, outcome: int | None, after: int,
             limit: int) -> Any:
    from dicomvault.audit.query import AuditFilter

    return AuditFilter(since=_time(since), until=_time(until), user_id=user,
                       patient_key_id=patient_key, study_uid=study, event=event, outcome=outcome,
                       after_seq=after, limit=limit)


Since = Annotated[str | None, typer.Option(help="From this time (ISO 8601, UTC if no zone).")]
Until = Annotated[str | None, typer.Option(help="Before this time (ISO 8601).")]
User = Annotated[str | None, typer.Option(help="Principal id (u:…, ae:…) or account name.")]
PatientKey = Annotated[str | None, typer.Option("--patient-key", help="Patient key id.")]
Study = Annotated[str | None, typer.Option(help="Study Instance UID.")]
Event = Annotated[str | None, typer.Option(help="Event type: name (query, security-alert…) or code.")]
OutcomeOpt = Annotated[int | None, typer.Option(help="EventOutcomeIndicator: 0, 4, 8 or 12.")]
After = Annotated[int, typer.Option(help="Only records after this number (paging).")]
Limit = Annotated[int, typer.Option(help="At most this many records (max 1000).")]


@app.command()
def search(
    config: ConfigOption = None, since: Since = None, until: Until = None, user: User = None,
    patient_key: PatientKey = None, study: Study = None, event: Event = None,
    outcome: OutcomeOpt = None, after: After = 0, limit: Limit = 100,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """Search the audit log (audited as Audit Log Used)."""
    from dicomvault.audit.query import AuditQueryService

    f = _filters(since, until, user, patient_key, study, event, outcome, after, limit)
    with _services(config) as services:
        records = AuditQueryService(services.audit, services.policy).search(
            system_principal("cli"), f)
    if as_json:
        for r in records:
            who = r.requestor
            sys.stdout.write(json.dumps({
                "seq": r.seq, "time": r.time.isoformat(), "event": r.event.meaning,
                "event_code": r.event.code, "action": r.action, "outcome": r.outcome,
                "user": who.user_id if who else None, "address": who.address if who else None,
                "door": r.door, "description": r.outcome_description,
            }) + "\n")
        return
    table = Table("seq", "time (UTC)", "event", "act", "out", "user", "address", "door")
    for r in records:
        who = r.requestor
        table.add_row(str(r.seq), r.time.strftime("%Y-%m-%d %H:%M:%S"), r.event.meaning, r.action,
                      str(r.outcome), who.user_id if who else "", (who.address or "") if who else "",
                      r.door)
    console.print(table)


@app.command()
def export(
    config: ConfigOption = None,
    fmt: Annotated[str, typer.Option("--format", help="xml (PS3.15 A.5.1, one message a line) "
                                                      "or fhir (AuditEvent NDJSON, IHE BALP).")] = "xml",
    out: Annotated[Path | None, typer.Option(help="Output file (default: standard output).")] = None,
    since: Since = None, until: Until = None, user: User = None, patient_key: PatientKey = None,
    study: Study = None, event: Event = None, outcome: OutcomeOpt = None, after: After = 0,
    limit: Annotated[int, typer.Option(help="At most this many records.")] = 1000,
) -> None:
    """Export records as DICOM audit messages (XML) or FHIR AuditEvents (audited)."""
    from dicomvault.audit.export import dicom_xml, fhir
    from dicomvault.audit.query import MAX_LIMIT, AuditQueryService

    if fmt not in ("xml", "fhir"):
        raise typer.BadParameter("--format is xml or fhir")
    stream = out.open("w", encoding="utf-8") if out else sys.stdout
    written = 0
    try:
        with _services(config) as services:
            svc = AuditQueryService(services.audit, services.policy)
            cursor = after
            while written < limit:
                f = _filters(since, until, user, patient_key, study, event, outcome, cursor,
                             min(MAX_LIMIT, limit - written))
                records = svc.search(system_principal("cli"), f)
                for r in records:
                    if fmt == "xml":
                        stream.write(dicom_xml.render(r, declaration=False).decode("utf-8") + "\n")
                    else:
                        for resource in fhir.render(r):
                            stream.write(json.dumps(resource, separators=(",", ":")) + "\n")
                written += len(records)
                if len(records) < f.limit:
                    break
                cursor = records[-1].seq
    finally:
        if out:
            stream.close()
    err_console.print(f"exported {written} records")


@app.command()
def disclosures(
    patient_key: Annotated[str, typer.Option("--patient-key", help="The patient's key id.")],
    config: ConfigOption = None, since: Since = None, until: Until = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """Accounting of disclosures for one patient: who accessed or received the data, when, why."""
    from dicomvault.audit.query import AuditQueryService, disclosures_as_rows

    with _services(config) as services:
        items = AuditQueryService(services.audit, services.policy).disclosures(
            system_principal("cli"), patient_key, since=_time(since), until=_time(until))
    if as_json:
        sys.stdout.write(json.dumps(disclosures_as_rows(items), indent=1) + "\n")
        return
    table = Table("seq", "time (UTC)", "who", "role", "from", "what", "studies", "to", "why")
    for d in items:
        table.add_row(str(d.seq), d.time.strftime("%Y-%m-%d %H:%M:%S"), d.user_id,
                      d.user_role or "", d.address or "", f"{d.event} ({d.action})",
                      ", ".join(d.studies), d.destination or "", d.reason)
    console.print(table)
