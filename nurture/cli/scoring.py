"""``nurture lead show EMAIL``: one lead, its score explained rule by rule, its timeline."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from nurture.cli.common import database_problem
from nurture.cli.output import SafeConsole, echo_json, escape
from nurture.db.session import make_engine, make_session_factory
from nurture.leads.schema import canonical_timezone
from nurture.leads.view import DEFAULT_LIMIT, LeadView, find_lead_id, lead_view
from nurture.scoring.loading import ScoringError, load_rules, scoring_path
from nurture.scoring.points import ScoreBreakdown
from nurture.scoring.rules import ScoringRules
from nurture.sequences.catalog import Catalog
from nurture.settings import Settings, load_settings

app = typer.Typer(help="One lead: its score explained, its timeline.", no_args_is_help=True)

REQUIRED_TABLES = ("leads", "events", "messages", "enrollments", "score_entries")


class Fatal(Exception):
    """The lead cannot be shown; the message says why."""


@app.command("show")
def show(
    email: Annotated[str, typer.Argument(help="The lead's email (any case).")],
    at: Annotated[
        str | None,
        typer.Option(help="Score as of this ISO time (default: now; no zone: the default zone)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="Timeline items to show.")] = DEFAULT_LIMIT,
    sequences: Annotated[
        Path | None, typer.Option(help="Folder with scoring.yaml (default: configured).")
    ] = None,
) -> None:
    """Show a lead: fields, stage, enrollment, score by rule (adds up to the total), timeline."""
    settings = load_settings()
    try:
        when = _parse_at(at, settings.default_timezone)
        rules = _rules(sequences or settings.sequences_dir)
        view = _load(settings, email, when, limit, rules)
    except Fatal as exc:
        SafeConsole(stderr=True).print(
            f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(1) from None
    if as_json:
        echo_json(view.to_json(), ensure_ascii=False, indent=2, default=str)
        return
    zone = ZoneInfo(
        canonical_timezone(view.fields["timezone"] or settings.default_timezone) or "UTC"
    )
    print_view(SafeConsole(), view, zone)


def _parse_at(text: str | None, default_timezone: str) -> datetime:
    if not text:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise Fatal(f"--at {text!r}: use an ISO time such as 2026-03-01T09:00+09:00") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(canonical_timezone(default_timezone) or "UTC"))
    return value


def _rules(folder: Path) -> ScoringRules:
    try:
        return load_rules(scoring_path(folder))
    except ScoringError as exc:
        raise Fatal(f"the scoring rules have errors:\n{exc}") from None


def _load(
    settings: Settings, email: str, at: datetime, limit: int, rules: ScoringRules
) -> LeadView:
    engine = _engine(settings)
    try:
        with make_session_factory(engine)() as session:
            lead_id = find_lead_id(session, email)
            # The published sequences say why a step waits (read only: nothing is published).
            catalog = Catalog.from_db(session)
            view = (
                lead_view(session, lead_id, at, limit=limit, rules=rules, catalog=catalog)
                if lead_id
                else None
            )
    finally:
        engine.dispose()
    if view is None:
        raise Fatal(f"no lead with email {email!r}")
    return view


def _engine(settings: Settings) -> Engine:
    engine = make_engine(settings.database_url)
    problem = database_problem(engine, REQUIRED_TABLES)
    if problem:
        engine.dispose()
        raise Fatal(problem)
    return engine


# -- printing ------------------------------------------------------------------------------


def print_view(console: Console, view: LeadView, zone: ZoneInfo) -> None:
    """The lead, its score, the breakdown table and the timeline table."""
    _print_lead(console, view, zone)
    _print_score(console, view.score, zone)
    console.print(breakdown_table(view.score))
    console.print(_timeline_table(view, zone))


def _print_lead(console: Console, view: LeadView, zone: ZoneInfo) -> None:
    f = view.fields
    name = " ".join(p for p in (f["first_name"], f["last_name"]) if p)
    console.print(f"[bold]{escape(f['email'])}[/]  (lead {view.lead_id}) {escape(name)}")
    facts = [
        ("company", f["company"]),
        ("title", f["title"]),
        ("industry", f["industry"]),
        ("size", f["company_size"]),
        ("country", f["country"]),
        ("persona", f["persona"]),
    ]
    facts += [(k, v) for k, v in sorted(f["attributes"].items())]
    console.print(
        "  " + "  ".join(f"{k}: {escape(str(v))}" for k, v in facts if v not in ("", None))
    )
    stages = f"lifecycle: [bold]{f['lifecycle_stage']}[/]  journey: [bold]{f['journey_stage']}[/]"
    console.print(f"  {stages}" + ("  [red]erased[/]" if f["erased_at"] else ""))
    for e in view.enrollments or []:
        nxt = f", next run {_time(e.next_run_at, zone)}" if e.next_run_at else ""
        console.print(f"  enrollment: {e.sequence} v{e.version}, step {e.step} ({e.status}{nxt})")
        if e.waiting:
            console.print(f"    waits: {escape(e.waiting)}")
    if not view.enrollments:
        console.print("  enrollment: none")
    if view.not_enrolled:
        console.print(f"  not in a sequence now: {escape(view.not_enrolled)}")


def _print_score(console: Console, score: ScoreBreakdown, zone: ZoneInfo) -> None:
    console.print(
        f"\n[bold]Score[/] at {_time(score.at, zone)}: fit {_num(score.fit)} + engagement "
        f"{_num(score.engagement)} + negative {_num(score.negative)} = "
        f"[bold]total {_num(score.total)}[/]"
    )


def breakdown_table(score: ScoreBreakdown) -> Table:
    """Rules and their (decayed) points; the rows sum to the total in the footer."""
    table = Table(title="Breakdown by rule", show_footer=True)
    table.add_column("rule", footer="total")
    table.add_column("category")
    table.add_column("hits", justify="right")
    table.add_column("points now", justify="right", footer=_num(score.total))
    counted: dict[str, int] = {}
    capped: dict[str, int] = {}
    for line in score.entries:  # a capped hit is in the ledger with 0 points
        tally = counted if line.points != 0 else capped
        tally[line.rule] = tally.get(line.rule, 0) + 1
    for rule, value in score.by_rule.items():
        hits = str(counted.get(rule, 0))
        if capped.get(rule):
            hits += f" (+{capped[rule]} capped)"
        table.add_row(rule, score.categories.get(rule, ""), hits, _num(value))
    return table


def _timeline_table(view: LeadView, zone: ZoneInfo) -> Table:
    table = Table(title=f"Timeline (newest first, at most {len(view.timeline)})")
    for name, justify in (("when", "left"), ("kind", "left"), ("what", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    table.add_column("detail", overflow="fold")
    table.add_column("status")
    table.add_column("points", justify="right")
    table.add_column("now", justify="right")
    for item in view.timeline:
        table.add_row(
            _time(item.at, zone),
            item.kind,
            escape(item.title),
            escape(item.detail),
            escape(item.status),
            "" if item.points is None else _num(item.points),
            "" if item.decayed is None else _num(item.decayed),
        )
    return table


def _num(value: float) -> str:
    """At most 2 decimals, no trailing zeros: 75, 12.5, -3.25."""
    return f"{round(value, 2) + 0.0:.2f}".rstrip("0").rstrip(".")


def _time(value: datetime | None, zone: ZoneInfo) -> str:
    return "" if value is None else f"{value.astimezone(zone):%Y-%m-%d %H:%M %Z}"
