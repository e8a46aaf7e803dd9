"""``nurture demo``, ``run``, ``tick`` and ``outbox``: running the engine."""

from __future__ import annotations

import logging
import shutil
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import select

from nurture.bootstrap import build_runtime
from nurture.cli.common import parse_instant
from nurture.cli.output import SafeConsole, echo_json, show_time, table_console
from nurture.cli.web import serve_in_thread
from nurture.db import migrate
from nurture.db.models import Message
from nurture.jobs.demo import (
    SimulationReport,
    deferral_reasons,
    funnel_summary,
    simulate,
)
from nurture.jobs.tick import tick as run_tick
from nurture.program.loading import AuthoringError
from nurture.runtime import Runtime
from nurture.sequences.batch import BatchReport
from nurture.settings import load_settings, require_secret_key

console = SafeConsole()
log = logging.getLogger("nurture")

# The demo starts on a fixed Monday so its output is the same on every machine.
DEMO_START = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
SAMPLE_LEADS = Path("data/sample_leads.csv")


def _runtime_or_exit(now: datetime, process: str | None = None, **overrides: object) -> Runtime:
    """The runtime with its sequences loaded; ``process``: the command signs links, so its
    key is checked first (weak only when everything is on this machine)."""
    settings = load_settings(**overrides)
    if process is not None:
        require_secret_key(settings, process)
    rt = build_runtime(settings)
    try:
        rt.load_program(now)
    except AuthoringError as exc:
        for problem in exc.problems:
            console.print(str(problem), markup=False)
        console.print("[red]the sequences have errors; fix them (nurture validate)[/]")
        raise typer.Exit(1) from exc
    return rt


def demo(
    weeks: Annotated[int, typer.Option(help="Simulated weeks to run.")] = 6,
    leads: Annotated[Path, typer.Option(help="Leads CSV to import.")] = SAMPLE_LEADS,
    workdir: Annotated[
        Path, typer.Option(help="Fresh folder for the demo's db and outbox.")
    ] = Path("demo"),
) -> None:
    """The main job on the embedded default: fresh SQLite, sample leads, simulated weeks."""
    from nurture.leads.importer import import_leads

    _require_demo_files(leads)
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    url = f"sqlite:///{workdir / 'nurture.db'}"
    outbox = workdir / "outbox"
    migrate.upgrade(url)
    console.print(f"migrated a fresh database: {workdir / 'nurture.db'}")
    rt = _runtime_or_exit(
        DEMO_START, database_url=url, outbox_dir=outbox, transport="outbox", broker_url=""
    )
    catalog = rt.catalog
    console.print(f"loaded {len(catalog.specs())} sequences from {rt.settings.sequences_dir}/")
    imported = import_leads(leads, rt.sessions, rt.funnel(), now=DEMO_START)
    console.print(
        f"imported {imported.created} leads ({imported.skipped} rows skipped); "
        f"enrolled {sum(imported.enrolled.values())}"
    )
    started = time.monotonic()
    report = simulate(rt, DEMO_START, timedelta(weeks=weeks))
    _print_simulation(rt, report, outbox, time.monotonic() - started)
    rt.close()


def _require_demo_files(leads: Path) -> None:
    """The demo runs the project's own program on its sample leads: from anywhere else it
    says what it is missing instead of failing half-way."""
    settings = load_settings()
    missing = [
        str(path)
        for path in (leads, settings.sequences_dir, settings.templates_dir)
        if not path.exists()
    ]
    if missing:
        console.print(
            f"[red]nurture demo needs {', '.join(missing)}[/]: run it from the project "
            "folder (make demo), or pass --leads and set NURTURE_SEQUENCES_DIR and "
            "NURTURE_TEMPLATES_DIR",
            highlight=False,
        )
        raise typer.Exit(2)


def _print_simulation(rt: Runtime, report: SimulationReport, outbox: Path, seconds: float) -> None:
    console.print(
        f"\nsimulated {report.start:%Y-%m-%d} to {report.end:%Y-%m-%d} in {report.ticks} ticks "
        f"({seconds:.1f}s); simulated engagement: {report.opens} opens, {report.clicks} clicks"
    )
    _print_sent(report.batches)
    table = Table(title="Deferred, and why")
    for col in ("sequence", "reason", "deferrals"):
        table.add_column(col)
    for (sequence, reason), count in sorted(deferral_reasons(rt).items()):
        table.add_row(sequence, reason, str(count))
    console.print(table)
    finished = Table(title="Left a sequence")
    for col in ("sequence", "reason", "leads"):
        finished.add_column(col)
    for (sequence, reason), count in sorted(report.batches.finished.items()):
        finished.add_row(sequence, reason, str(count))
    console.print(finished)
    _print_funnel(rt, report)
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(report.by_status.items()))
    emls = len(list(outbox.glob("*.eml"))) if outbox.exists() else 0
    console.print(f"messages by status: {statuses}")
    console.print(f"[bold]{emls} emails written to {outbox}/[/]")


def _print_funnel(rt: Runtime, report: SimulationReport) -> None:
    stages, changes = funnel_summary(rt)
    table = Table(title="The funnel: stage changes (scores and triggers from the engagement)")
    for col in ("from", "to", "why", "leads"):
        table.add_column(col)
    for (before, after, why), count in sorted(changes.items()):
        table.add_row(before, after, why, str(count))
    console.print(table)
    console.print(
        "leads by lifecycle stage: " + ", ".join(f"{k} {v}" for k, v in sorted(stages.items()))
    )


def _print_sent(report: BatchReport) -> None:
    table = Table(title="Sent, by sequence and step")
    for col in ("sequence", "step", "sent"):
        table.add_column(col)
    for (sequence, step), count in sorted(report.sent.items()):
        table.add_row(sequence, step, str(count))
    table.add_row("[bold]total[/]", "", f"[bold]{report.total_sent}[/]")
    console.print(table)


def tick(
    now: Annotated[str | None, typer.Option(help="ISO time of the pass (default: now).")] = None,
) -> None:
    """One scheduler pass in-process: for cron users and debugging."""
    at = parse_instant(now)
    rt = _runtime_or_exit(at, "nurture tick")
    report = run_tick(rt, at)
    console.print(
        f"tick at {at.isoformat()}: {report.total_sent} sent, "
        f"{sum(report.deferred.values())} deferred, {sum(report.finished.values())} finished"
    )
    if report.total_sent:
        _print_sent(report)
    rt.close()


def run(
    tick_seconds: Annotated[float | None, typer.Option(help="Seconds between passes.")] = None,
    web: Annotated[
        bool, typer.Option("--web/--no-web", help="Serve the web app too (NURTURE_WEB_PORT).")
    ] = True,
) -> None:
    """The engine on one machine without Redis, with the web app in a thread, until Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # Sending signs links whether or not this process serves them.
    rt = _runtime_or_exit(datetime.now(UTC), "nurture run")
    server = serve_in_thread(rt) if web else None
    interval = tick_seconds or rt.settings.tick_seconds
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        # Interrupting a batch would leave its claimed messages "sending", later "unknown"
        # and never sent: finish the batch first. A second Ctrl-C stops at once.
        nonlocal stopping
        stopping = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        log.info("stopping after the current batch (%s)", signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    log.info("engine running: a pass every %ss (Ctrl-C to stop)", interval)
    try:
        while not stopping:
            report = run_tick(rt, datetime.now(UTC), should_stop=lambda: stopping)
            if report.total_sent or report.deferred:
                log.info(
                    "pass: %d sent, %d deferred", report.total_sent, sum(report.deferred.values())
                )
            _sleep_unless(lambda: stopping, interval)
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if server is not None:
            server.stop()
    log.info("engine stopped")
    rt.close()


def _sleep_unless(stopping: Callable[[], bool], seconds: float) -> None:
    """Sleep ``seconds`` in short slices, waking early once ``stopping()`` is true."""
    deadline = time.monotonic() + seconds
    while not stopping() and (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.2))


def outbox(
    status: Annotated[str | None, typer.Option(help="Only this status (e.g. unknown).")] = None,
    limit: Annotated[int, typer.Option(help="Rows to show.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Messages with their status: sent, retry, failed, bounced, and unknown ones."""
    rt = build_runtime(load_settings())
    query = select(Message).order_by(Message.id.desc()).limit(limit)
    if status:
        query = query.where(Message.status == status)
    with rt.sessions() as session:
        found = list(session.scalars(query))
    rt.close()
    if as_json:
        rows = [_message_json(m) for m in found]
        echo_json({"messages": rows}, indent=2, ensure_ascii=False)
        return
    table = Table(title=f"Messages{f' ({status})' if status else ''}")
    for col in ("id", "to", "sequence", "step", "status", "tries", "created", "sent", "error"):
        table.add_column(col, overflow="fold")
    for m in found:
        table.add_row(
            str(m.id),
            m.to_email,
            m.sequence_key,
            m.step_id,
            m.status,
            str(m.attempts),
            show_time(m.created_at),
            show_time(m.sent_at),
            m.error[:80],
        )
    table_console().print(table)


def _message_json(m: Message) -> dict[str, object]:
    """One row of ``outbox --json``; times in UTC ISO 8601, the error in full."""
    return {
        "id": m.id,
        "to": m.to_email,
        "sequence": m.sequence_key,
        "step": m.step_id,
        "status": m.status,
        "attempts": m.attempts,
        "created_at": m.created_at.astimezone(UTC).isoformat(),
        "sent_at": m.sent_at.astimezone(UTC).isoformat() if m.sent_at else None,
        "error": m.error,
    }
