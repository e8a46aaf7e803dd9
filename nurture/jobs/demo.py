"""Running the engine against a simulated clock (``nurture demo``): the same services as
production, with time jumping from one due moment to the next."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select

from nurture.db.events import record_event
from nurture.db.models import Enrollment, Event, Lead, Message, StageChange
from nurture.db.session import transaction
from nurture.jobs.events import process_now
from nurture.jobs.tick import tick
from nurture.runtime import Runtime
from nurture.sequences.batch import BatchReport

# Engagement of simulated leads: roughly a B2B newsletter's human open and click rates.
OPEN_RATE = 0.35
CLICK_RATE = 0.12
# Opens and clicks arrive a little after the send.
ENGAGEMENT_DELAY = timedelta(hours=2)
# Of the leads clicking decision-stage mail, some look at pricing and some ask for a demo.
PRICING_AFTER_CLICK = 0.5
DEMO_AFTER_CLICK = 0.1
PRICING_URL = "https://www.ledgerline.example/pricing"


@dataclass
class SimulationReport:
    start: datetime
    end: datetime
    ticks: int = 0
    batches: BatchReport = field(default_factory=BatchReport)
    opens: int = 0
    clicks: int = 0
    by_status: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class _Planned:
    """A simulated lead action that has not happened yet on the simulated clock."""

    at: datetime
    lead_id: int
    message_id: int | None
    event_type: str
    data: dict[str, object]


def simulate(rt: Runtime, start: datetime, duration: timedelta, seed: int = 7) -> SimulationReport:
    """Run ticks from ``start`` for ``duration``, jumping to each next due moment, with
    seeded simulated engagement so branches, scores and stage changes happen."""
    rng = random.Random(seed)
    report = SimulationReport(start=start, end=start + duration)
    planned: list[_Planned] = []
    now = start
    while now <= report.end:
        # Actions whose moment has come enter the system as the API would take them.
        planned = _happen(rt, now, planned, report)
        report.batches.merge(tick(rt, now))
        report.ticks += 1
        planned.extend(_plan(rt, now, rng))
        upcoming = [t for t in (_next_due(rt, now), *(p.at for p in planned)) if t is not None]
        if not upcoming:
            break
        now = max(min(upcoming), now + timedelta(minutes=1))
    report.by_status = _message_statuses(rt)
    return report


def _plan(rt: Runtime, now: datetime, rng: random.Random) -> list[_Planned]:
    """Simulated leads open and click some of the mail sent at ``now``; some clickers of
    decision-stage mail go on to the pricing page or ask for a demo."""
    with rt.sessions() as session:
        sent = session.scalars(
            select(Message).where(Message.status == "sent", Message.sent_at == now)
        ).all()
    planned: list[_Planned] = []
    for message in sent:
        opened, clicked = rng.random() < OPEN_RATE, rng.random() < CLICK_RATE
        data: dict[str, object] = {"simulated": True, "step": message.step_id}
        at = now + ENGAGEMENT_DELAY
        if opened or clicked:
            planned.append(_Planned(at, message.lead_id, message.id, "opened", data))
        if not clicked:
            continue
        planned.append(_Planned(at, message.lead_id, message.id, "clicked", data))
        if "decision" in message.sequence_key and rng.random() < PRICING_AFTER_CLICK:
            page = {"simulated": True, "url": PRICING_URL, "title": "Pricing"}
            planned.append(
                _Planned(
                    at + timedelta(minutes=5), message.lead_id, None, "pricing_page_view", page
                )
            )
        if "decision" in message.sequence_key and rng.random() < DEMO_AFTER_CLICK:
            planned.append(
                _Planned(
                    at + timedelta(minutes=9),
                    message.lead_id,
                    None,
                    "demo_requested",
                    {"simulated": True},
                )
            )
    return planned


def _happen(
    rt: Runtime, now: datetime, planned: list[_Planned], report: SimulationReport
) -> list[_Planned]:
    """Store the actions due by ``now``, then score them and run the funnel on them (the
    pipeline the API ingest uses). Returns the actions still in the future."""
    due = [p for p in planned if p.at <= now]
    if not due:
        return planned
    with transaction(rt.sessions) as session:
        for n, action in enumerate(due):
            record_event(
                session,
                lead_id=action.lead_id,
                message_id=action.message_id,
                event_type=action.event_type,
                at=action.at,
                dedupe=f"sim-{action.event_type}:{action.lead_id}:{action.message_id}:{action.at:%s}:{n}",
                data=action.data,
            )
            report.opens += action.event_type == "opened"
            report.clicks += action.event_type == "clicked"
        session.flush()
        ids = list(
            session.scalars(
                select(Event.id).where(Event.scored_at.is_(None), Event.occurred_at <= now)
            )
        )
    process_now(rt, ids, now)
    return [p for p in planned if p.at > now]


def _next_due(rt: Runtime, now: datetime) -> datetime | None:
    with rt.sessions() as session:
        return session.scalar(
            select(func.min(Enrollment.next_run_at)).where(
                Enrollment.status == "active", Enrollment.next_run_at > now
            )
        )


def _message_statuses(rt: Runtime) -> Counter[str]:
    with rt.sessions() as session:
        rows = session.execute(select(Message.status, func.count()).group_by(Message.status))
        return Counter({status: count for status, count in rows})


def deferral_reasons(rt: Runtime) -> Counter[tuple[str, str]]:
    """How many deferrals each sequence had, by reason (window, cap, smtp)."""
    with rt.sessions() as session:
        events = session.scalars(select(Event).where(Event.type == "deferred"))
        return Counter((e.data.get("sequence", ""), e.data.get("reason", "")) for e in events)


def funnel_summary(rt: Runtime) -> tuple[Counter[str], Counter[tuple[str, str, str]]]:
    """Leads per lifecycle stage, and stage changes by (from, to, reason kind), leaving out
    the first stage each lead was imported with."""
    with rt.sessions() as session:
        stages = session.execute(
            select(Lead.lifecycle_stage, func.count()).group_by(Lead.lifecycle_stage)
        )
        changes = session.execute(
            select(
                StageChange.from_stage, StageChange.to_stage, StageChange.reason_kind, func.count()
            )
            .where(StageChange.from_stage != "")
            .group_by(StageChange.from_stage, StageChange.to_stage, StageChange.reason_kind)
        )
        return (
            Counter({stage: n for stage, n in stages}),
            Counter({(a, b, why): n for a, b, why, n in changes}),
        )
