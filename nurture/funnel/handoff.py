"""Hand-offs to sales: the context document, and its delivery as signed webhooks.

A hand-off opens when a lead reaches a stage where it waits for sales (an MQL to accept,
an SAL to qualify). On MQL and on a fast track, the context (why it qualified, its score,
what it read, what it was sent, its stage history, its owner) is queued for every target
in the same transaction as the stage change (an outbox): nothing is sent inside an API
request. The engine's pass (:func:`deliver_due`) claims due deliveries, POSTs them with a
timeout, and records every attempt; failures are retried with backoff."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.core.vocabulary import SITE_EVENTS
from nurture.db.models import (
    Event,
    Handoff,
    Lead,
    Message,
    StageChange,
)

log = logging.getLogger(__name__)

# Hand-offs that notify sales when they open (an SAL or SQL only starts an SLA clock).
NOTIFY_KINDS = ("mql", "fast_track")
# Events whose data carries the content the lead engaged with.
CONTENT_EVENTS = ("clicked", *SITE_EVENTS)


# -- hand-offs ----------------------------------------------------------------------------


def open_handoff(
    session: Session,
    lead: Lead,
    *,
    stage: str,
    kind: str,
    priority: str,
    due_at: datetime | None,
    owner: str,
    now: datetime,
    flush: bool = True,
) -> Handoff:
    """Start the SLA clock of a lead waiting for sales in ``stage`` (``flush``: write it
    now, so it has its id)."""
    handoff = Handoff(
        lead_id=lead.id,
        kind=kind,
        stage=stage,
        priority=priority,
        opened_at=now,
        due_at=due_at,
        owner=owner,
        cycle=lead.cycle,
        outcome="",
    )
    session.add(handoff)
    if flush:
        session.flush()
    return handoff


def open_handoffs(session: Session, lead_id: int) -> list[Handoff]:
    return open_handoffs_of(session, [lead_id])


def open_handoffs_of(session: Session, lead_ids: Sequence[int]) -> list[Handoff]:
    """The open hand-offs of these leads, oldest first."""
    query = select(Handoff).where(Handoff.lead_id.in_(lead_ids), Handoff.closed_at.is_(None))
    return list(session.scalars(query.order_by(Handoff.id)))


def close_handoffs(
    session: Session,
    lead_id: int,
    outcome: str,
    now: datetime,
    *,
    open_ones: Sequence[Handoff] | None = None,
) -> list[Handoff]:
    """Close the lead's open hand-offs: sales acted (or the lead moved on) at ``now``.
    ``open_ones``: those hand-offs, when the caller read them already."""
    closed = list(open_ones) if open_ones is not None else open_handoffs(session, lead_id)
    for handoff in closed:
        handoff.closed_at = now
        handoff.outcome = outcome
    return closed


# -- the context document -----------------------------------------------------------------


def build_context(
    session: Session,
    lead: Lead,
    handoff: Handoff,
    why: dict[str, Any],
    recent: int,
    base_url: str,
) -> dict[str, Any]:
    """Everything sales needs to call the lead warm: who, why, what it read, what it got."""
    return {
        "handoff": handoff_json(handoff),
        "lead": lead_json(lead, base_url),
        "why": why,
        "engaged_content": engaged_content(session, lead.id, recent),
        "messages": messages_received(session, lead.id, recent),
        "stage_history": stage_history(session, lead.id),
    }


def handoff_json(handoff: Handoff) -> dict[str, Any]:
    return {
        "id": handoff.id,
        "kind": handoff.kind,
        "stage": handoff.stage,
        "priority": handoff.priority,
        "opened_at": _iso(handoff.opened_at),
        "due_at": _iso(handoff.due_at),
        "closed_at": _iso(handoff.closed_at),
        "outcome": handoff.outcome,
        "breached_at": _iso(handoff.breached_at),
        "owner": handoff.owner,
        "cycle": handoff.cycle,
    }


def lead_json(lead: Lead, base_url: str) -> dict[str, Any]:
    fields = (
        "id",
        "email",
        "first_name",
        "last_name",
        "company",
        "title",
        "industry",
        "company_size",
        "country",
        "persona",
        "journey_stage",
        "lifecycle_stage",
        "cycle",
        "owner",
    )
    data: dict[str, Any] = {name: getattr(lead, name) for name in fields}
    data["url"] = f"{base_url.rstrip('/')}/api/v1/leads/{lead.id}"
    return data


def engaged_content(session: Session, lead_id: int, limit: int) -> list[dict[str, Any]]:
    """The lead's latest human behavior, with the title and URL of the content."""
    query = (
        select(Event)
        .where(
            Event.lead_id == lead_id,
            Event.type.in_(CONTENT_EVENTS),
            Event.is_human.is_(True),
        )
        .order_by(Event.occurred_at.desc(), Event.id.desc())
        .limit(limit)
    )
    return [
        {
            "type": event.type,
            "at": _iso(event.occurred_at),
            "title": str(event.data.get("title") or event.data.get("name") or ""),
            "url": str(event.data.get("url") or ""),
        }
        for event in session.scalars(query)
    ]


def messages_received(session: Session, lead_id: int, limit: int) -> list[dict[str, Any]]:
    query = (
        select(Message)
        .where(Message.lead_id == lead_id, Message.status == "sent")
        .order_by(Message.sent_at.desc(), Message.id.desc())
        .limit(limit)
    )
    return [
        {
            "sequence": m.sequence_key,
            "step": m.step_id,
            "subject": m.subject,
            "sent_at": _iso(m.sent_at),
        }
        for m in session.scalars(query)
    ]


def stage_history(session: Session, lead_id: int) -> list[dict[str, Any]]:
    """Every stage change of the lead, oldest first, with the score at that moment."""
    query = select(StageChange).where(StageChange.lead_id == lead_id)
    return [
        stage_change_json(change)
        for change in session.scalars(query.order_by(StageChange.at, StageChange.id))
    ]


def stage_change_json(change: StageChange) -> dict[str, Any]:
    return {
        "from": change.from_stage,
        "to": change.to_stage,
        "at": _iso(change.at),
        "reason": change.reason_kind,
        "detail": change.reason_detail,
        "actor": change.actor,
        "score": change.score,
        "cycle": change.cycle,
        "data": change.data,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# -- queueing notifications ----------------------------------------------------------------


# -- the delivery pass ---------------------------------------------------------------------
