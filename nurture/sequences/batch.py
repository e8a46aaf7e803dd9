"""A batch of claimed enrollments: what it reads (leads, suppressions, activity, recent sends,
messages) with one query per kind, and what it did."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from nurture.authoring.lead_context import LeadData, lead_fields
from nurture.core.conditions import Activity
from nurture.core.leads import LEAD_FIELDS
from nurture.core.vocabulary import DELIVERY_EVENTS
from nurture.db.models import Enrollment, Event, Lead, Message, Suppression
from nurture.sequences.drip import Drip
from nurture.sequences.engine import (
    Context,
)
from nurture.suppression.keys import suppression_keys

# Messages that count towards the frequency cap: anything that may have reached the lead.
CAPPED_STATUSES = ("sent", "sending", "unknown")

log = logging.getLogger(__name__)


T = TypeVar("T")


R = TypeVar("R")


@dataclass
class BatchReport:
    """What a batch did, for log lines and the demo summary."""

    sent: Counter[tuple[str, str]] = field(default_factory=Counter)
    deferred: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    finished: Counter[tuple[str, str]] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)

    def merge(self, other: BatchReport) -> None:
        self.sent.update(other.sent)
        self.deferred.update(other.deferred)
        self.finished.update(other.finished)
        self.problems.update(other.problems)

    @property
    def total_sent(self) -> int:
        return sum(self.sent.values())


@dataclass
class BatchState:
    """Everything the core needs for a batch, loaded with one query per kind."""

    # Rows of the lead columns, not ORM objects (a fifth of the cost to load); a lead the batch
    # changes is replaced by its ORM object (a stage move, in _apply).
    leads: dict[int, LeadData]
    suppressed: dict[str, str]
    activity: dict[int, Activity]
    # Per lead, each recent message by id, with when it was sent (or claimed): the cap counts
    # a message once, however often the batch looks at the lead.
    recent_sends: dict[int, dict[int, datetime]]
    messages: dict[tuple[int, str], Message]
    # The template/condition view of each lead, made once per batch (see lead_view).
    views: dict[int, dict[str, Any]] = field(default_factory=dict)

    def lead_view(self, lead: LeadData) -> dict[str, Any]:
        """``lead_fields(lead)``, computed once per lead and batch (a lead changes within a
        batch only by a stage move, which calls ``forget``)."""
        view = self.views.get(lead.id)
        if view is None:
            view = self.views[lead.id] = lead_fields(lead)
        return view

    def forget(self, lead_id: int) -> None:
        self.views.pop(lead_id, None)

    def refill(self, other: BatchState) -> None:
        """Take ``other``'s content (a reload after a rolled-back savepoint)."""
        for name in (f.name for f in fields(self)):
            setattr(self, name, getattr(other, name))


def in_savepoints(
    session: Session,
    items: list[T],
    apply: Callable[[T, BatchReport], R],
    on_error: Callable[[T, Exception], None],
    reset: Callable[[], None],
    report: BatchReport,
) -> list[R]:
    """``apply`` to every item in one savepoint; if that fails, roll it back, ``reset`` what
    the rollback made stale, and redo one savepoint per item, handing failures to
    ``on_error``. What ``apply`` counts reaches ``report`` only if its savepoint commits."""
    attempt = BatchReport()
    try:
        with session.begin_nested():
            results = [apply(item, attempt) for item in items]
    except Exception as exc:
        log.warning("batch of %d failed (%s); redoing it one by one", len(items), describe(exc))
    else:
        report.merge(attempt)
        return results
    reset()
    results = []
    for item in items:
        one = BatchReport()
        try:
            with session.begin_nested():
                result = apply(item, one)
        except Exception as exc:
            on_error(item, exc)
            continue
        report.merge(one)
        results.append(result)
    return results


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def load_state(
    session: Session, enrollments: list[Enrollment], now: datetime, cap_period: timedelta
) -> BatchState:
    lead_ids = {e.lead_id for e in enrollments}
    leads: dict[int, LeadData] = {
        row.id: row for row in session.execute(_LEAD_ROWS.where(Lead.id.in_(lead_ids)))
    }
    # An erased address is suppressed by its hash only (see services/erasure.py).
    keys = suppression_keys(lead.email for lead in leads.values())
    rows = session.execute(
        select(Suppression.email, Suppression.reason).where(Suppression.email.in_(list(keys)))
    )
    suppressed = {keys[key]: reason for key, reason in rows}
    messages = {
        (m.enrollment_id, m.step_id): m
        for m in session.scalars(
            select(Message).where(Message.enrollment_id.in_([e.id for e in enrollments]))
        )
    }
    return BatchState(
        leads=leads,
        suppressed=suppressed,
        activity=_load_activity(session, enrollments, lead_ids),
        recent_sends=_load_recent_sends(session, lead_ids, now - cap_period),
        messages=messages,
    )


# What a batch reads of its leads: what decisions and templates see, id and email.
_LEAD_ROWS = select(Lead.id, Lead.attributes, *(getattr(Lead, name) for name in LEAD_FIELDS))


def _load_activity(
    session: Session, enrollments: list[Enrollment], lead_ids: set[int]
) -> dict[int, Activity]:
    rows = session.execute(
        select(Event.lead_id, Event.type, Event.occurred_at, Message.enrollment_id, Message.step_id)
        .outerjoin(Message, Event.message_id == Message.id)
        .where(
            Event.lead_id.in_(lead_ids),
            Event.type.not_in(DELIVERY_EVENTS),
            Event.is_human.is_(True),  # bots and prefetches never steer a branch
        )
    )
    opened: dict[int, set[str]] = defaultdict(set)
    clicked: dict[int, set[str]] = defaultdict(set)
    events: dict[int, list[tuple[str, datetime]]] = defaultdict(list)
    for lead_id, event_type, occurred_at, enrollment_id, step_id in rows:
        if lead_id is None:
            continue
        events[lead_id].append((event_type, occurred_at))
        if enrollment_id is not None and event_type == "opened":
            opened[enrollment_id].add(step_id)
        if enrollment_id is not None and event_type == "clicked":
            clicked[enrollment_id].add(step_id)
    return {
        e.id: Activity(frozenset(opened[e.id]), frozenset(clicked[e.id]), tuple(events[e.lead_id]))
        for e in enrollments
    }


def _load_recent_sends(
    session: Session, lead_ids: set[int], since: datetime
) -> dict[int, dict[int, datetime]]:
    sent_or_claimed = func.coalesce(Message.sent_at, Message.created_at)
    rows = session.execute(
        select(Message.lead_id, Message.id, sent_or_claimed).where(
            Message.lead_id.in_(lead_ids),
            Message.status.in_(CAPPED_STATUSES),
            or_(Message.sent_at >= since, Message.created_at >= since),
        )
    )
    sends: dict[int, dict[int, datetime]] = defaultdict(dict)
    for lead_id, message_id, at in rows:
        sends[lead_id][message_id] = at
    return sends


def context_for(drip: Drip, enrollment: Enrollment, state: BatchState) -> Context:
    lead = state.leads[enrollment.lead_id]
    return Context(
        lead=state.lead_view(lead),
        activity=state.activity.get(enrollment.id, Activity()),
        recent_sends=tuple(state.recent_sends.get(lead.id, {}).values()),
        suppressed=state.suppressed.get(lead.email.lower(), ""),
        default_timezone=drip.default_timezone,
        default_locale=drip.default_locale,
        default_country=drip.default_country,
        cap=drip.cap,
    )
