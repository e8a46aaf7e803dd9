"""Running the engine against a simulated clock (``nurture demo``): the same services as
production, with time jumping from one due moment to the next."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select

from nurture.bootstrap import Runtime
from nurture.db.models import Enrollment, Event, Message
from nurture.db.session import transaction
from nurture.services.advance import BatchReport, record_event
from nurture.services.ticks import tick

# Engagement of simulated leads: roughly a B2B newsletter's human open and click rates.
OPEN_RATE = 0.35
CLICK_RATE = 0.12
# Opens and clicks arrive a little after the send.
ENGAGEMENT_DELAY = timedelta(hours=2)


@dataclass
class SimulationReport:
    start: datetime
    end: datetime
    ticks: int = 0
    batches: BatchReport = field(default_factory=BatchReport)
    opens: int = 0
    clicks: int = 0
    by_status: Counter[str] = field(default_factory=Counter)


def simulate(rt: Runtime, start: datetime, duration: timedelta, seed: int = 7) -> SimulationReport:
    """Run ticks from ``start`` for ``duration``, jumping to each next due moment, with
    seeded simulated engagement so branches and stage moves happen."""
    rng = random.Random(seed)
    report = SimulationReport(start=start, end=start + duration)
    now = start
    while now <= report.end:
        report.batches.merge(tick(rt, now))
        report.ticks += 1
        _engage(rt, now, rng, report)
        upcoming = _next_due(rt, now)
        if upcoming is None:
            break
        now = max(upcoming, now + timedelta(minutes=1))
    report.by_status = _message_statuses(rt)
    return report


def _engage(rt: Runtime, now: datetime, rng: random.Random, report: SimulationReport) -> None:
    """Simulated leads open and click some of the mail sent at ``now``."""
    with transaction(rt.sessions) as session:
        sent = session.scalars(
            select(Message).where(Message.status == "sent", Message.sent_at == now)
        ).all()
        for message in sent:
            opened, clicked = rng.random() < OPEN_RATE, rng.random() < CLICK_RATE
            for event_type, happened in (("opened", opened or clicked), ("clicked", clicked)):
                if not happened:
                    continue
                record_event(
                    session,
                    lead_id=message.lead_id,
                    message_id=message.id,
                    event_type=event_type,
                    at=now + ENGAGEMENT_DELAY,
                    dedupe=f"sim-{event_type}:{message.id}",
                    data={"simulated": True, "step": message.step_id},
                )
                report.opens += event_type == "opened"
                report.clicks += event_type == "clicked"


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
