"""``nurture sales``: sales decisions on a lead (accept, qualify, reject, disqualify, and
opportunity/customer as a CRM would set them), and ``status``: where a lead stands."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from nurture.bootstrap import build_runtime
from nurture.cli.output import SafeConsole, echo_json, escape, show_time
from nurture.db.models import Lead
from nurture.db.session import transaction
from nurture.funnel.decisions import Bant, SalesDecision
from nurture.funnel.funnel import Funnel
from nurture.funnel.loading import LifecycleConfigError
from nurture.funnel.machine import TransitionRefused
from nurture.funnel.sales import DecisionRefused, apply_decision
from nurture.funnel.status import lead_status
from nurture.program.loading import AuthoringError
from nurture.runtime import Runtime
from nurture.settings import Settings, load_settings

app = typer.Typer(help="Sales decisions on leads, and where a lead stands.", no_args_is_help=True)
console = SafeConsole()
err = SafeConsole(stderr=True)

EmailArg = Annotated[str, typer.Argument(help="The lead's email address (any case).")]
NoteOpt = Annotated[str, typer.Option("--note", help="Free text for the stage history.")]
ActorOpt = Annotated[str, typer.Option("--actor", help="Who decides (e.g. your email).")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Reason code (see lifecycle.yaml).")]


def fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


@contextmanager
def database(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Sessions on the configured database; a clear error when it is unreachable."""
    with runtime(settings, load=False) as rt:
        yield rt.sessions


@contextmanager
def runtime(settings: Settings, *, load: bool = True) -> Iterator[Runtime]:
    """The runtime on the configured database, its program loaded unless ``load`` is
    False; a clear error when the database is unreachable or the sequences have errors."""
    rt = build_runtime(settings)
    try:
        if load:
            _load(rt)
        yield rt
    except SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise fail(f"database: {first} (is it migrated? `nurture db upgrade`)") from None
    finally:
        rt.close()


def _load(rt: Runtime) -> None:
    try:
        rt.load_program(datetime.now(UTC))
    except AuthoringError as exc:
        raise fail(f"the sequences have errors (nurture validate):\n{exc}") from None


def find_lead(session: Session, email: str) -> Lead:
    lead = session.scalar(select(Lead).where(func.lower(Lead.email) == email.strip().lower()))
    if lead is None:
        raise fail(f"no lead with email {email}")
    return lead


def _funnel(rt: Runtime) -> Funnel:
    funnel = rt.funnel()
    try:
        spec = funnel.spec
    except LifecycleConfigError as exc:
        raise fail(f"lifecycle.yaml has errors (nurture validate):\n{exc}") from None
    if spec is None:
        raise fail(f"no lifecycle.yaml in {rt.settings.sequences_dir}")
    return funnel


def _decide(email: str, **fields: Any) -> None:
    settings = load_settings()
    try:
        decision = SalesDecision(**fields)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise fail(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    now = datetime.now(UTC)
    with runtime(settings) as rt, transaction(rt.sessions) as session:
        funnel = _funnel(rt)
        lead = find_lead(session, email)
        before = lead.lifecycle_stage
        try:
            change = apply_decision(session, lead, decision, now, funnel)
        except DecisionRefused as exc:
            raise fail(f"{exc.field}: {exc.message}") from None
        except TransitionRefused as exc:
            raise fail(str(exc)) from None
        extra = f"; silent until {lead.recycle_until:%Y-%m-%d}" if lead.recycle_until else ""
        console.print(
            f"{lead.email}: {before} -> {change.to_stage} (score {change.score:g}{extra})",
            markup=False,
            highlight=False,
        )


@app.command()
def accept(email: EmailArg, note: NoteOpt = "", actor: ActorOpt = "") -> None:
    """Sales takes an MQL on: MQL -> SAL (the actor becomes its owner if it has none)."""
    _decide(email, decision="accept", note=note, actor=actor)


@app.command()
def qualify(
    email: EmailArg,
    budget: Annotated[str, typer.Option(help="BANT: the budget found.")] = "",
    authority: Annotated[str, typer.Option(help="BANT: who decides.")] = "",
    need: Annotated[str, typer.Option(help="BANT: the need.")] = "",
    timeline: Annotated[str, typer.Option(help="BANT: when they buy.")] = "",
    note: NoteOpt = "",
    actor: ActorOpt = "",
) -> None:
    """Sales confirms buying intent: -> SQL (needs the BANT answers lifecycle.yaml names)."""
    bant = Bant(budget=budget, authority=authority, need=need, timeline=timeline)
    _decide(email, decision="qualify", bant=bant, note=note, actor=actor)


@app.command()
def reject(
    email: EmailArg, reason: ReasonOpt = "", note: NoteOpt = "", actor: ActorOpt = ""
) -> None:
    """Back to marketing: -> recycled, silent for the reason's cool-down, then re-nurtured."""
    _decide(email, decision="reject", reason_code=reason, note=note, actor=actor)


@app.command()
def disqualify(
    email: EmailArg, reason: ReasonOpt = "", note: NoteOpt = "", actor: ActorOpt = ""
) -> None:
    """Wrong fit: -> disqualified. Every sequence stops now; it is never nurtured again."""
    _decide(email, decision="disqualify", reason_code=reason, note=note, actor=actor)


@app.command()
def opportunity(email: EmailArg, note: NoteOpt = "", actor: ActorOpt = "") -> None:
    """A deal is open: SQL -> opportunity."""
    _decide(email, decision="opportunity", note=note, actor=actor)


@app.command()
def customer(email: EmailArg, note: NoteOpt = "", actor: ActorOpt = "") -> None:
    """The deal is won: opportunity -> customer."""
    _decide(email, decision="customer", note=note, actor=actor)


@app.command()
def status(
    email: EmailArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Where a lead stands: stage, score, why it is (not) an MQL, hand-offs, history."""
    settings = load_settings()
    now = datetime.now(UTC)
    with runtime(settings) as rt, rt.sessions() as session:
        found = lead_status(session, find_lead(session, email), now, _funnel(rt))
    if as_json:
        echo_json(found, indent=2, ensure_ascii=False)
        return
    _print_status(found)


def _print_status(found: dict[str, Any]) -> None:
    lead, score = found["lead"], found["score"]
    console.print(
        f"[bold]{escape(lead['email'])}[/]  stage [bold]{found['stage']}[/] (cycle "
        f"{found['cycle']})  owner {escape(found['owner'] or '-')}  score {score['total']:g} "
        f"(fit {score['fit']:g}, engagement {score['engagement']:g}, "
        f"negative {score['negative']:g})"
    )
    if found["recycle_until"]:
        console.print(
            f"recycled ({found['recycle_reason']}): silent until "
            f"{show_time(found['recycle_until'])}"
        )
    assessment = found.get("assessment") or {}
    for excluded in assessment.get("excluded", []):
        console.print(f"[red]never MQL[/] ({excluded['name']}): {escape(excluded['reason'])}")
    for rule in assessment.get("mql_rules", []):
        mark = "[green]holds[/]" if rule["holds"] else "no"
        console.print(f"MQL rule {rule['name']}: {mark} ({escape(rule['why'])})")
    since = assessment.get("triggers_counted_since")
    if assessment.get("fast_track"):
        start = f" ({show_time(since)})" if since else ""
        console.print(f"fast-track events count since entering the current stage{start}")
    for trigger in assessment.get("fast_track", []):
        console.print(
            f"fast track {trigger['name']}: {_trigger_mark(trigger)} ({escape(trigger['why'])})"
        )
    for handoff in found["handoffs"]:
        console.print(
            f"open hand-off #{handoff['id']} ({handoff['kind']}, {handoff['priority']}): "
            f"due {show_time(handoff['due_at']) or '-'}, owner {escape(handoff['owner'] or '-')}"
        )
    _print_history(found["stage_history"])


def _trigger_mark(trigger: dict[str, Any]) -> str:
    """What a trigger did: fired, or fired but blocked (nothing happened), or no."""
    if not trigger["fired"]:
        return "no"
    if trigger.get("blocked_by"):
        return f"[red]blocked by exclusion {escape(trigger['blocked_by'])}[/]"
    return "[green]fired[/]"


def _print_history(history: list[dict[str, Any]]) -> None:
    table = Table(title="Stage history")
    for column in ("at", "cycle", "from", "to", "reason", "by", "score"):
        table.add_column(column, overflow="fold")
    for change in history:
        table.add_row(
            show_time(change["at"]),
            str(change["cycle"]),
            change["from"],
            change["to"],
            f"{change['reason']}: {change['detail']}",
            change["actor"],
            f"{change['score']:g}" if change["score"] is not None else "",
        )
    console.print(table)
