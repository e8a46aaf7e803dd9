"""``nurture web`` (the web process), ``nurture events import|process`` and
``nurture leads erase``."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from nurture.bootstrap import build_runtime
from nurture.cli.common import database_problem
from nurture.cli.output import SafeConsole, count_table, echo_json, escape, print_errors
from nurture.db.models import Lead
from nurture.db.session import transaction
from nurture.jobs.events import process_unscored, submit
from nurture.leads.erasure import erase_lead, find_lead, is_erased_address
from nurture.leads.events import UnknownEmailPolicy
from nurture.leads.events_import import (
    EventsImportReport,
    ImportAborted,
    check_file,
    import_events,
)
from nurture.program.loading import AuthoringError
from nurture.program.program import Program
from nurture.runtime import Runtime
from nurture.scoring.loading import ScoringError
from nurture.settings import (
    Settings,
    load_settings,
    require_secret_key,
    require_strong_secret_key,
)

log = logging.getLogger("nurture")
events_app = typer.Typer(help="Site behavior events: bulk import, scoring catch-up.")
SHOWN_ERRORS = 50
REQUIRED_TABLES = ("leads", "messages", "events", "links", "suppressions", "score_entries")


def _fail(message: str) -> typer.Exit:
    SafeConsole(stderr=True).print(f"[red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(1)


def _checked_runtime(settings: Settings) -> Runtime:
    """A runtime on a migrated database, or a clear error and exit 1."""
    rt = build_runtime(settings)
    problem = database_problem(rt.engine, REQUIRED_TABLES)
    if problem:
        rt.close()
        raise _fail(problem)
    return rt


def _program(rt: Runtime, now: datetime) -> Program:
    """The runtime's program, loaded; a clear error and exit 1 when it cannot be."""
    try:
        program = rt.load_program(now)
        program.scoring  # noqa: B018 (raises when scoring.yaml never loaded)
    except (AuthoringError, ScoringError) as exc:
        rt.close()
        raise _fail(f"the program has errors (nurture validate):\n{exc}") from None
    return program


def web(
    host: Annotated[str | None, typer.Option(help="Address to bind (NURTURE_WEB_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (NURTURE_WEB_PORT).")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes (NURTURE_WEB_WORKERS).")
    ] = None,
) -> None:
    """The web process: tracking links, unsubscribe, the JSON API and /healthz."""
    from nurture.web.app import create_app

    settings = load_settings()
    bind, processes = host or settings.web_host, workers or settings.web_workers
    if processes > 1:
        # Each worker process builds the app with the factory, which cannot see the host.
        require_strong_secret_key(settings, f"web --workers {processes}")
    else:
        require_secret_key(settings, "web", web_host=bind)
    rt = _checked_runtime(settings)
    app: Any = create_app(rt, owns_runtime=True)
    if processes > 1:
        rt.close()
        app = "nurture.web.app:app_from_env"
    uvicorn.run(
        app,
        factory=processes > 1,
        host=bind,
        port=settings.web_port if port is None else port,
        workers=processes,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        log_level="info",
    )


class WebThread:
    """The web app served from a thread of another process (``nurture run``)."""

    def __init__(self, rt: Runtime, host: str, port: int) -> None:
        from nurture.web.app import create_app

        config = uvicorn.Config(
            create_app(rt),
            host=host,
            port=port,
            proxy_headers=True,
            forwarded_allow_ips=rt.settings.forwarded_allow_ips,
            log_level="warning",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="nurture-web", daemon=True)

    def start(self) -> WebThread:
        self.thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def serve_in_thread(rt: Runtime) -> WebThread:
    """Start the web app on NURTURE_WEB_HOST:NURTURE_WEB_PORT in a daemon thread."""
    log.info("web app on http://%s:%s", rt.settings.web_host, rt.settings.web_port)
    return WebThread(rt, rt.settings.web_host, rt.settings.web_port).start()


@events_app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="JSON lines (.jsonl, .ndjson) or CSV (.csv).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print only the report, as JSON.")] = (
        False
    ),
    unknown_email: Annotated[
        str | None,
        typer.Option(help="create or reject (default: NURTURE_UNKNOWN_EMAIL_EVENTS)."),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Exit 1 when any row was not stored (duplicates aside)."),
    ] = False,
) -> None:
    """Import events (bulk history); bad rows are reported by number and field, and skipped."""
    settings = load_settings()
    policy = _policy(unknown_email or settings.unknown_email_events)
    try:
        check_file(file)
    except ImportAborted as exc:
        _abort(str(exc), as_json)
    rt = _checked_runtime(settings)
    try:
        report = _run_import(rt, file, policy, None if as_json else SafeConsole(stderr=True))
    except ImportAborted as exc:
        _abort(str(exc), as_json)
    finally:
        rt.close()
    if as_json:
        echo_json(report.to_json(), indent=2, ensure_ascii=False)
    else:
        _print_report(report, SafeConsole())
    if report.rows and report.created + report.duplicates == 0:
        raise typer.Exit(1)
    # A duplicate is already stored: a re-run of the same file is not a failure.
    if strict and report.created + report.duplicates < report.rows:
        raise typer.Exit(1)


def _policy(value: str) -> UnknownEmailPolicy:
    if value == "create":
        return "create"
    if value == "reject":
        return "reject"
    raise typer.BadParameter("use create or reject", param_hint="--unknown-email")


def _abort(message: str, as_json: bool) -> None:
    if as_json:
        echo_json({"error": message}, indent=2)
        raise typer.Exit(1)
    raise _fail(message)


def _run_import(
    rt: Runtime, file: Path, policy: UnknownEmailPolicy, console: Console | None
) -> EventsImportReport:
    now = datetime.now(UTC)
    rules = _program(rt, now).scoring

    def process(ids: list[int]) -> None:
        submit(rt, ids, now)

    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=console is None,
    )
    with progress:
        task = progress.add_task("importing events", total=_count_lines(file))
        report = import_events(
            file,
            rt.sessions,
            now=now,
            unknown_email=policy,
            default_timezone=rt.settings.default_timezone,
            process=process,
            on_progress=lambda rows: progress.update(task, completed=rows),
            rules=rules,
        )
        progress.update(task, total=report.rows, completed=report.rows)
    return report


def _count_lines(file: Path) -> int:
    """Rows to expect (lines; a CSV's header is not one): an estimate for the progress bar."""
    with file.open("rb") as stream:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: stream.read(1 << 20), b""))
    return max(lines - (file.suffix.lower() == ".csv"), 0)


def _print_report(report: EventsImportReport, console: Console) -> None:
    if report.errors:
        heading = f"[bold]Rows not stored[/] ({report.unit} numbers of {report.file}):"
        lines = [f"{report.unit} {e}" for e in report.errors]
        print_errors(console, heading, lines, SHOWN_ERRORS)
    counts = (
        ("rows read", report.rows),
        ("stored", report.created),
        ("duplicates (already stored)", report.duplicates),
        ("rejected (unknown or erased email)", report.rejected),
        ("invalid", report.invalid),
        ("leads created", report.leads_created),
    )
    console.print(count_table("Events import", report.file, counts))


@events_app.command("process")
def process_command() -> None:
    """Score stored events nobody scored yet (e.g. after a crash or a broker outage)."""
    rt = _checked_runtime(load_settings())
    try:
        now = datetime.now(UTC)
        _program(rt, now)
        done = process_unscored(rt, now)
    finally:
        rt.close()
    SafeConsole().print(f"processed {done} events")


def erase_command(
    email: Annotated[str, typer.Argument(help="The lead's email address.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Erase a lead's personal data; a hashed suppression keeps it from ever being mailed."""
    rt = _checked_runtime(load_settings())
    try:
        with rt.sessions() as session:
            lead = find_lead(session, email)
            erased = lead is None and is_erased_address(session, email)
        if lead is None:
            if erased:
                SafeConsole().print(f"{escape(email)} was already erased")
                return
            raise _fail(f"no lead has the email {email}")
        if not yes and not typer.confirm(f"Erase the personal data of {email}?"):
            raise typer.Exit(1)
        with transaction(rt.sessions) as session:
            target = session.get(Lead, lead.id, with_for_update=True)
            if target is None:
                raise _fail(f"the lead with the email {email} was deleted meanwhile")
            report = erase_lead(session, target, datetime.now(UTC))
    finally:
        rt.close()
    if as_json:
        echo_json(report.to_json(), indent=2)
        return
    SafeConsole().print(
        f"erased lead {report.lead_id}: {report.messages} messages and {report.events} events "
        f"kept without personal data; {report.enrollments_exited} enrollments ended; "
        "the address is suppressed by its hash"
    )
