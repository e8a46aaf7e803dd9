"""``nurture leads``: import leads from CSV and list them with where they are."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine, and_, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from nurture.bootstrap import build_runtime
from nurture.cli.common import database_problem, parse_instant
from nurture.cli.output import (
    SafeConsole,
    count_table,
    echo_json,
    escape,
    print_errors,
    show_time,
    table_console,
)
from nurture.db.models import Enrollment, Lead
from nurture.db.session import make_engine, make_session_factory
from nurture.leads.csv_file import check_file
from nurture.leads.importer import (
    ROW_CONVENTION,
    ImportAborted,
    ImportReport,
    funnel_for_import,
    import_leads,
)
from nurture.leads.schema import canonical_timezone
from nurture.program.loading import AuthoringError
from nurture.runtime import Runtime
from nurture.settings import Settings, load_settings

app = typer.Typer(help="Leads: import from CSV, list.", no_args_is_help=True)

# Enough rejected rows to see the pattern; the JSON report has them all.
SHOWN_ERRORS = 50
REQUIRED_TABLES = ("leads", "enrollments", "sequence_versions", "suppressions")


class Fatal(Exception):
    """Nothing could be imported; the message says why and what to do."""


@app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="CSV file with a header row; 'email' required.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print only the report, as JSON.")
    ] = False,
    sequences: Annotated[
        Path | None, typer.Option(help="Sequences folder (default: NURTURE_SEQUENCES_DIR).")
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 1 when any row was skipped (for scripts).")
    ] = False,
    now: Annotated[
        str | None,
        typer.Option(help="ISO time the import happens at, with its zone (default: now)."),
    ] = None,
) -> None:
    """Import (upsert by email) and enroll the leads of a CSV file; bad rows are skipped."""
    settings = load_settings()
    at = parse_instant(now)  # as `nurture tick --now`: rehearse a day on a copy of the db
    console, err_console = SafeConsole(), SafeConsole(stderr=True)
    try:
        report = _run_import(
            settings,
            file,
            sequences or settings.sequences_dir,
            None if as_json else err_console,
            at,
        )
    except Fatal as exc:
        if as_json:
            echo_json({"error": str(exc)}, indent=2)
        else:
            err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if as_json:
        # Plain output: a console would wrap long lines and break the JSON.
        echo_json(report.to_json(), indent=2, ensure_ascii=False)
    else:
        _print_report(report, console)
    if report.database_errors and report.imported == 0:
        raise typer.Exit(1)
    if strict and report.skipped:  # the good rows are imported all the same
        raise typer.Exit(1)


def _run_import(
    settings: Settings,
    file: Path,
    sequences: Path,
    err_console: Console | None,
    now: datetime,
) -> ImportReport:
    """Check the file, publish the program, import at ``now``; ``err_console`` None means
    quiet."""
    try:
        check_file(file)
    except ImportAborted as exc:
        raise Fatal(str(exc)) from None
    _engine(settings).dispose()  # a migrated database, or Fatal with what to do
    rt = build_runtime(settings.model_copy(update={"sequences_dir": sequences}))
    try:
        _load_program(rt, sequences, now, err_console)
        with _progress(err_console) as progress:
            task = progress.add_task("importing", total=_count_rows(file))
            report = import_leads(
                file,
                rt.sessions,
                funnel_for_import(rt.funnel),
                now=now,
                on_progress=lambda rows: progress.update(task, completed=rows),
            )
            progress.update(task, total=report.rows, completed=report.rows)
        return report
    except ImportAborted as exc:
        raise Fatal(str(exc)) from None
    finally:
        rt.close()


def _engine(settings: Settings) -> Engine:
    """An engine on a migrated database, or Fatal with what to do."""
    engine = make_engine(settings.database_url)
    problem = database_problem(engine, REQUIRED_TABLES, _first_line)
    if problem:
        engine.dispose()
        raise Fatal(problem)
    return engine


def _load_program(rt: Runtime, sequences: Path, now: datetime, err_console: Console | None) -> None:
    """Load the program (refusing sequences with errors) and publish new versions."""
    if not sequences.exists():
        raise Fatal(
            f"{sequences}: no such file or directory\n"
            f"the sequences in {sequences} have errors; fix them first"
        )
    try:
        program = rt.load_program(now)
    except AuthoringError as exc:
        listing = "\n".join(str(p) for p in exc.problems)
        raise Fatal(
            f"{listing}\nthe sequences in {sequences} have errors; fix them first"
        ) from None
    except (ValueError, SQLAlchemyError) as exc:
        raise Fatal(f"cannot publish the sequences: {_first_line(exc)}") from None
    if err_console is not None:
        for warning in program.warnings:
            err_console.print(str(warning), markup=False, highlight=False, soft_wrap=True)


class RateColumn(ProgressColumn):
    """Rows per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} rows/s" if speed else "", style="progress.data.speed")


def _progress(err_console: Console | None) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=err_console is None,
        transient=False,
    )


def _count_rows(file: Path) -> int:
    """Data rows, by counting lines (cheap; quoted line breaks make it an estimate)."""
    lines, last = 0, b"\n"
    with file.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    lines += last != b"\n"  # a last line without a line break
    return max(lines - 1, 0)


def _print_report(report: ImportReport, console: Console) -> None:
    if report.errors:
        heading = f"[bold]Skipped rows[/] ({ROW_CONVENTION}):"
        print_errors(console, heading, [str(e) for e in report.errors], SHOWN_ERRORS)
    counts = (
        ("rows read", report.rows),
        ("created", report.created),
        ("updated", report.updated),
        ("skipped", report.skipped),
    )
    table = count_table("Import summary", report.file, counts)
    for key, count in sorted(report.enrolled.items()):
        table.add_row(f"enrolled in {key}", str(count))
    for reason, count in sorted(report.not_enrolled.items()):
        table.add_row(f"not enrolled: {reason.replace('_', ' ')}", str(count))
    console.print(table)


@app.command("list")
def list_command(
    limit: Annotated[int, typer.Option(min=1, help="Leads to show.")] = 50,
    sequence: Annotated[
        str | None, typer.Option(help="Only leads active in this sequence (its key).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Leads with their stage and the sequence they are in; next run in the lead's zone."""
    settings = load_settings()
    try:
        engine = _engine(settings)
    except Fatal as exc:
        SafeConsole(stderr=True).print(
            f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(1) from None
    try:
        with make_session_factory(engine)() as session:
            total, rows = _lead_rows(session, limit, sequence)
    finally:
        engine.dispose()
    if as_json:
        listed = [_lead_json(lead, enrollment) for lead, enrollment in rows]
        echo_json({"total": total, "leads": listed}, indent=2, ensure_ascii=False)
        return
    table = Table(title=f"Leads ({len(rows)} of {total})")
    for column in ("email", "persona", "stage", "lifecycle", "sequence", "step", "next run"):
        table.add_column(column, overflow="fold")
    for lead, enrollment in rows:
        table.add_row(
            lead.email,
            lead.persona,
            lead.journey_stage,
            lead.lifecycle_stage,
            enrollment.sequence_key if enrollment else "",
            enrollment.current_step if enrollment else "",
            _next_run(lead, enrollment, settings.default_timezone),
        )
    table_console().print(table)


def _lead_json(lead: Lead, enrollment: Enrollment | None) -> dict[str, object]:
    """One row of ``leads list --json``; times in UTC ISO 8601."""
    next_run = enrollment.next_run_at if enrollment else None
    return {
        "id": lead.id,
        "email": lead.email,
        "persona": lead.persona,
        "journey_stage": lead.journey_stage,
        "lifecycle_stage": lead.lifecycle_stage,
        "timezone": lead.timezone,
        "sequence": enrollment.sequence_key if enrollment else None,
        "step": enrollment.current_step if enrollment else None,
        "next_run_at": next_run.astimezone(UTC).isoformat() if next_run else None,
    }


def _lead_rows(
    session: Session, limit: int, sequence: str | None
) -> tuple[int, list[tuple[Lead, Enrollment | None]]]:
    active = and_(Enrollment.lead_id == Lead.id, Enrollment.status == "active")
    query = select(Lead, Enrollment).outerjoin(Enrollment, active)
    if sequence:
        query = select(Lead, Enrollment).join(Enrollment, active)
        query = query.where(Enrollment.sequence_key == sequence)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.execute(query.order_by(Lead.id).limit(limit))
    return total, [(lead, enrollment) for lead, enrollment in rows]


def _next_run(lead: Lead, enrollment: Enrollment | None, default_timezone: str) -> str:
    if enrollment is None or enrollment.next_run_at is None:
        return ""
    zone = canonical_timezone(lead.timezone or default_timezone) or "UTC"
    return show_time(enrollment.next_run_at, ZoneInfo(zone))


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
