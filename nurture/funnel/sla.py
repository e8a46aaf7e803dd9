"""Service-level agreements of hand-offs: when sales must have acted, in business days
where the lead is (its country's public holidays, its time zone), and what was late.

A hand-off is *met* when it closed by its due time, *breached* when it did not (recorded
once, at the due time, and notified as ``sla.breached``), and *open* until it closes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.db.models import Handoff, Lead
from nurture.funnel.handoff import build_context
from nurture.funnel.notifications import Targets, queue_notification
from nurture.funnel.spec import LifecycleSpec
from nurture.sequences.business_days import BusinessCalendar
from nurture.sequences.timing import resolve_zone
from nurture.settings import Settings

BREACH_EVENT = "sla.breached"


def calendar_for(spec: LifecycleSpec, settings: Settings, lead: Lead) -> BusinessCalendar:
    """The lead's business days: its country's holidays, else the configured default."""
    country = (lead.country or spec.sla.country or settings.default_country).upper()
    return BusinessCalendar.of(country, spec.sla.extra_holidays)


def due_at(
    spec: LifecycleSpec, settings: Settings, lead: Lead, stage: str, opened_at: datetime
) -> datetime | None:
    """When sales must have acted on ``lead`` waiting in ``stage`` (None: no SLA)."""
    sla = spec.sla.for_stage(stage)
    if sla is None:
        return None
    zone = resolve_zone(lead.timezone, None, settings.default_timezone)
    return calendar_for(spec, settings, lead).add_business_days(opened_at, sla.business_days, zone)


def settle_closed(handoffs: list[Handoff], now: datetime) -> list[Handoff]:
    """Hand-offs closed after their due time, marked breached (the ones not yet marked)."""
    late = [
        h
        for h in handoffs
        if h.due_at is not None and h.breached_at is None and (h.closed_at or now) > h.due_at
    ]
    for handoff in late:
        handoff.breached_at = handoff.due_at
    return late


def mark_breaches(
    session: Session, spec: LifecycleSpec, settings: Settings, now: datetime
) -> list[Handoff]:
    """Open hand-offs past their due time: record the breach and notify it (once)."""
    query = select(Handoff).where(
        Handoff.closed_at.is_(None), Handoff.breached_at.is_(None), Handoff.due_at <= now
    )
    breached = list(session.scalars(query.order_by(Handoff.due_at, Handoff.id)))
    for handoff in breached:
        handoff.breached_at = handoff.due_at
    notify_breaches(session, spec, settings, breached, now)
    return breached


def notify_breaches(
    session: Session,
    spec: LifecycleSpec,
    settings: Settings,
    handoffs: list[Handoff],
    now: datetime,
) -> None:
    """Queue an ``sla.breached`` notification per hand-off."""
    targets = Targets.of(spec.handoff, settings)
    if not handoffs or not (targets.webhooks or targets.slack):
        return
    for handoff in handoffs:
        lead = session.get(Lead, handoff.lead_id)
        if lead is None:
            continue
        why = {"reason": f"SLA breached: {handoff.stage} not acted on by {handoff.due_at}"}
        document = build_context(
            session, lead, handoff, why, spec.handoff.recent, settings.base_url
        )
        queue_notification(
            session,
            event=BREACH_EVENT,
            document=document,
            targets=targets,
            lead_id=lead.id,
            handoff_id=handoff.id,
            now=now,
        )


def status_of(handoff: Handoff, now: datetime) -> str:
    """``open``, ``met`` or ``breached`` (an open hand-off past due is breached already)."""
    if handoff.breached_at is not None or (
        handoff.due_at is not None and (handoff.closed_at or now) > handoff.due_at
    ):
        return "breached"
    return "open" if handoff.closed_at is None else "met"


@dataclass
class SlaReport:
    """Hand-offs with their SLA status, and counts by stage and status."""

    at: datetime
    rows: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        totals = Counter(status for (_, status) in self.counts.elements())
        return {
            "at": self.at.isoformat(),
            "totals": {s: totals.get(s, 0) for s in ("open", "met", "breached")},
            "by_stage": [
                {"stage": stage, "status": status, "count": count}
                for (stage, status), count in sorted(self.counts.items())
            ],
            "handoffs": self.rows,
        }


def sla_report(
    session: Session, now: datetime, status: str | None = None, limit: int = 500
) -> SlaReport:
    """Every hand-off (newest first, up to ``limit`` rows) with its SLA status."""
    report = SlaReport(at=now)
    query = select(Handoff, Lead.email).join(Lead, Lead.id == Handoff.lead_id)
    for handoff, email in session.execute(
        query.order_by(Handoff.opened_at.desc(), Handoff.id.desc())
    ):
        state = status_of(handoff, now)
        report.counts[(handoff.stage, state)] += 1
        if (status is None or state == status) and len(report.rows) < limit:
            report.rows.append(_row(handoff, email, state))
    return report


def _row(handoff: Handoff, email: str, state: str) -> dict[str, Any]:
    return {
        "id": handoff.id,
        "lead": email,
        "kind": handoff.kind,
        "stage": handoff.stage,
        "priority": handoff.priority,
        "owner": handoff.owner,
        "opened_at": handoff.opened_at.isoformat(),
        "due_at": handoff.due_at.isoformat() if handoff.due_at else None,
        "closed_at": handoff.closed_at.isoformat() if handoff.closed_at else None,
        "outcome": handoff.outcome,
        "breached_at": handoff.breached_at.isoformat() if handoff.breached_at else None,
        "status": state,
    }
