"""Advancing claimed enrollments: load the batch, ask the core what to do, store it, send.

At most one message per (enrollment, step): the message row is claimed (status
``sending``) and committed before the transport is called, and marked after. A row still
``sending`` when the step is next looked at means the process died mid-send: it becomes
``unknown`` and is never blindly resent."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, inspect, or_, select
from sqlalchemy.orm import Session

from nurture.authoring.templates import lead_fields
from nurture.bootstrap import Runtime
from nurture.core.conditions import Activity
from nurture.core.engine import (
    Complete,
    Context,
    Decision,
    Defer,
    Exit,
    MoveToStage,
    Position,
    SendEmail,
    WaitUntil,
    decide,
)
from nurture.db.models import Enrollment, Event, Lead, Message, Suppression
from nurture.db.session import transaction
from nurture.services.catalog import Catalog
from nurture.services.enrollment import enroll
from nurture.services.erasure import suppression_keys
from nurture.services.scheduler import Claim, take_over
from nurture.services.sending import Outcome, PendingSend, deliver

log = logging.getLogger(__name__)

# Messages that count towards the frequency cap: anything that may have reached the lead.
CAPPED_STATUSES = ("sent", "sending", "unknown")
# Event types that are the engine's own bookkeeping, not lead behavior.
DELIVERY_EVENTS = ("sent", "deferred", "failed", "unknown", "bounced")
# Enough hops for any sane sequence; a guard against a bug looping in one batch.
MAX_DECISIONS_PER_RUN = 20
# The position of an enrollment that sent its last step; no step has this id.
END_OF_SEQUENCE = "__end__"
# session.info keys (see record_event): the events the session added, by dedupe key, and
# dedupe keys looked up in bulk and known to be absent from the database.
_UNFLUSHED_EVENTS = "nurture.unflushed_events"
_ABSENT_EVENTS = "nurture.absent_events"
# The event a send outcome records (a retry with attempts left defers instead).
_OUTCOME_EVENTS = {"sent": "sent", "bounced": "bounced", "retry": "failed", "failed": "failed"}


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

    leads: dict[int, Lead]
    suppressed: dict[str, str]
    activity: dict[int, Activity]
    recent_sends: dict[int, list[datetime]]
    messages: dict[tuple[int, str], Message]


def process_claims(rt: Runtime, claims: list[Claim], now: datetime) -> BatchReport:
    """Advance the claimed enrollments as far as they go at ``now``, sending what is due."""
    report = BatchReport()
    lease = timedelta(seconds=rt.settings.claim_lease_seconds)
    with transaction(rt.sessions) as session:
        _, ids = take_over(session, claims, now, lease)
        if not ids:
            return report
        pending = _advance_all(session, rt, ids, now, report)
    # The claims above are committed: only now is the transport called.
    outcomes = deliver(rt, pending, now)
    with transaction(rt.sessions) as session:
        _record_outcomes(session, rt, outcomes, now, report)
    return report


def _advance_all(
    session: Session, rt: Runtime, ids: list[int], now: datetime, report: BatchReport
) -> list[PendingSend]:
    enrollments = list(session.scalars(select(Enrollment).where(Enrollment.id.in_(ids))))
    state = load_state(session, enrollments, now, rt.cap.period)
    pending: list[PendingSend] = []
    for enrollment in enrollments:
        send = advance(session, rt, enrollment, state, now, report, may_send=True)
        if send:
            pending.append(send)
    # One flush inserts the batch's new message rows (a flush per message costs a statement
    # each); their ids go into the Message-ID and the links, so they are read after it.
    session.flush()
    return [_with_message_id(send, state) for send in pending]


def _with_message_id(send: PendingSend, state: BatchState) -> PendingSend:
    message = state.messages[(send.enrollment_id, send.decision.step_id)]
    return replace(send, message_id=message.id)


def load_state(
    session: Session, enrollments: list[Enrollment], now: datetime, cap_period: timedelta
) -> BatchState:
    lead_ids = {e.lead_id for e in enrollments}
    leads = {lead.id: lead for lead in session.scalars(select(Lead).where(Lead.id.in_(lead_ids)))}
    # An erased address is suppressed by its hash only (see services/erasure.py).
    keys = suppression_keys(lead.email for lead in leads.values())
    rows = session.execute(
        select(Suppression.email, Suppression.reason).where(Suppression.email.in_(list(keys)))
    )
    suppressed = {keys[key]: reason for key, reason in rows.tuples()}
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
    ).tuples()
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
) -> dict[int, list[datetime]]:
    sent_or_claimed = func.coalesce(Message.sent_at, Message.created_at)
    rows = session.execute(
        select(Message.lead_id, sent_or_claimed).where(
            Message.lead_id.in_(lead_ids),
            Message.status.in_(CAPPED_STATUSES),
            or_(Message.sent_at >= since, Message.created_at >= since),
        )
    ).tuples()
    sends: dict[int, list[datetime]] = defaultdict(list)
    for lead_id, at in rows:
        sends[lead_id].append(at)
    return sends


def context_for(rt: Runtime, enrollment: Enrollment, state: BatchState) -> Context:
    lead = state.leads[enrollment.lead_id]
    return Context(
        lead=lead_fields(lead),
        activity=state.activity.get(enrollment.id, Activity()),
        recent_sends=tuple(state.recent_sends.get(lead.id, ())),
        suppressed=state.suppressed.get(lead.email.lower(), ""),
        default_timezone=rt.settings.default_timezone,
        default_locale=rt.settings.default_locale,
        cap=rt.cap,
    )


def advance(
    session: Session,
    rt: Runtime,
    enrollment: Enrollment,
    state: BatchState,
    now: datetime,
    report: BatchReport,
    *,
    may_send: bool,
) -> PendingSend | None:
    """Apply the core's decisions to one enrollment until it waits, leaves, or must send."""
    catalog = rt.require_catalog()
    spec = catalog.spec(enrollment.sequence_key, enrollment.sequence_version, session)
    for _ in range(MAX_DECISIONS_PER_RUN):
        position = Position(enrollment.current_step, enrollment.entered_at)
        decision = decide(spec, position, context_for(rt, enrollment, state), now)
        if isinstance(decision, SendEmail):
            if not may_send:  # one send per run; the next tick takes the following one
                _schedule(enrollment, decision.step_id, now)
                return None
            pending = _claim_message(session, rt, enrollment, decision, state, now, report)
            if pending:
                return pending
            continue  # the step was already dealt with; move on
        _apply(session, catalog, enrollment, state, decision, now, report)
        return None
    _finish(enrollment, "exited", "stopped: too many steps in one run", now)
    return None


def _apply(
    session: Session,
    catalog: Catalog,
    enrollment: Enrollment,
    state: BatchState,
    decision: Decision,
    now: datetime,
    report: BatchReport,
) -> None:
    key = enrollment.sequence_key
    if isinstance(decision, WaitUntil):
        enrollment.current_step = decision.step_id
        enrollment.step_started_at = decision.run_at
        _schedule(enrollment, decision.step_id, decision.run_at)
    elif isinstance(decision, Defer):
        _defer(session, enrollment, decision, now)
        report.deferred[(key, decision.step_id, decision.reason)] += 1
    elif isinstance(decision, MoveToStage):
        lead = state.leads[enrollment.lead_id]
        lead.journey_stage = decision.journey_stage
        _finish(enrollment, "exited", f"moved to {decision.journey_stage}", now)
        session.flush()
        enroll(session, lead, catalog, now)
        report.finished[(key, f"moved to {decision.journey_stage}")] += 1
    elif isinstance(decision, Exit):
        _finish(enrollment, "exited", decision.reason, now)
        report.finished[(key, decision.reason)] += 1
    elif isinstance(decision, Complete):
        _finish(enrollment, "completed", "completed the sequence", now)
        report.finished[(key, "completed")] += 1


def _schedule(enrollment: Enrollment, step_id: str, run_at: datetime) -> None:
    enrollment.current_step = step_id
    enrollment.next_run_at = run_at
    enrollment.claim_token = None
    enrollment.claimed_until = None


def _defer(session: Session, enrollment: Enrollment, decision: Defer, now: datetime) -> None:
    enrollment.last_deferral = f"{decision.reason} until {decision.run_at.isoformat()}"
    _schedule(enrollment, decision.step_id, decision.run_at)
    record_event(
        session,
        lead_id=enrollment.lead_id,
        event_type="deferred",
        at=now,
        dedupe=f"deferred:{enrollment.id}:{decision.step_id}:{decision.run_at.isoformat()}",
        data={
            "sequence": enrollment.sequence_key,
            "step": decision.step_id,
            "reason": decision.reason,
            "until": decision.run_at.isoformat(),
        },
    )


def _finish(enrollment: Enrollment, status: str, reason: str, now: datetime) -> None:
    enrollment.status = status
    enrollment.exit_reason = reason[:200]
    enrollment.exited_at = now
    enrollment.next_run_at = None
    enrollment.claim_token = None
    enrollment.claimed_until = None


def record_event(
    session: Session,
    *,
    lead_id: int | None,
    event_type: str,
    at: datetime,
    dedupe: str,
    data: dict[str, Any],
    message_id: int | None = None,
) -> None:
    """Store an event unless one with the same dedupe key exists."""
    # The check must not autoflush: that would write a batch's rows one message at a time.
    # An event this session added and has not flushed yet is looked up here instead.
    added: dict[str, Event] = session.info.setdefault(_UNFLUSHED_EVENTS, {})
    earlier = added.get(dedupe)
    if earlier is not None and inspect(earlier).pending:
        return
    absent: set[str] = session.info.get(_ABSENT_EVENTS, set())
    if dedupe in absent:
        absent.discard(dedupe)  # from now on the event is in `added`, or in the database
        exists = None
    else:
        with session.no_autoflush:
            exists = session.scalar(select(Event.id).where(Event.dedupe_key == dedupe))
    if exists is None:
        event = Event(
            lead_id=lead_id,
            message_id=message_id,
            type=event_type,
            occurred_at=at,
            dedupe_key=dedupe,
            data=data,
        )
        session.add(event)
        added[dedupe] = event


def prefetch_events(session: Session, dedupe_keys: list[str]) -> None:
    """Look dedupe keys up in one query, so that record_event, called for them next in the
    same session, need not query each one."""
    if not dedupe_keys:
        return
    with session.no_autoflush:
        query = select(Event.dedupe_key).where(Event.dedupe_key.in_(dedupe_keys))
        stored = set(session.scalars(query))
    absent: set[str] = session.info.setdefault(_ABSENT_EVENTS, set())
    absent.update(key for key in dedupe_keys if key not in stored)


def _claim_message(
    session: Session,
    rt: Runtime,
    enrollment: Enrollment,
    decision: SendEmail,
    state: BatchState,
    now: datetime,
    report: BatchReport,
) -> PendingSend | None:
    """Record the claim on (enrollment, step) before any SMTP, or skip a step already tried."""
    lead = state.leads[enrollment.lead_id]
    message = state.messages.get((enrollment.id, decision.step_id))
    if message is not None and message.status != "retry":
        if message.status == "sending":  # a worker died between claim and outcome
            message.status = "unknown"
            message.error = "outcome unknown: the process stopped during the send; not resent"
            report.problems["unknown"] += 1
        _move_past(enrollment, decision)
        return None
    if message is None:
        message = Message(
            enrollment_id=enrollment.id,
            lead_id=lead.id,
            sequence_key=enrollment.sequence_key,
            sequence_version=enrollment.sequence_version,
            step_id=decision.step_id,
            to_email=lead.email,
            created_at=now,
            attempts=0,
        )
        session.add(message)
        state.messages[(enrollment.id, decision.step_id)] = message
    message.status = "sending"
    message.attempts += 1
    return PendingSend(
        message_id=message.id,  # None for a new row until the batch's flush (_advance_all)
        enrollment_id=enrollment.id,
        decision=decision,
        lead=lead_fields(lead),
        sequence_key=enrollment.sequence_key,
        sequence_name=rt.require_catalog()
        .spec(enrollment.sequence_key, enrollment.sequence_version, session)
        .name,
    )


def _move_past(enrollment: Enrollment, decision: SendEmail) -> None:
    # Past the last step, the core decides Complete on the next pass.
    enrollment.current_step = decision.next_step or END_OF_SEQUENCE


def _record_outcomes(
    session: Session, rt: Runtime, outcomes: list[Outcome], now: datetime, report: BatchReport
) -> None:
    if not outcomes:
        return
    enrollments = {
        e.id: e
        for e in session.scalars(
            select(Enrollment).where(Enrollment.id.in_([o.pending.enrollment_id for o in outcomes]))
        )
    }
    messages = {
        m.id: m
        for m in session.scalars(
            select(Message).where(Message.id.in_([o.pending.message_id for o in outcomes]))
        )
    }
    state = load_state(session, list(enrollments.values()), now, rt.cap.period)
    prefetch_events(
        session,
        [
            _event_key(_OUTCOME_EVENTS[o.status], messages[o.pending.message_id])
            for o in outcomes
            if o.status in _OUTCOME_EVENTS
        ],
    )
    for outcome in outcomes:
        enrollment = enrollments[outcome.pending.enrollment_id]
        message = messages[outcome.pending.message_id]
        _record_outcome(session, rt, enrollment, message, outcome, state, now, report)


def _record_outcome(
    session: Session,
    rt: Runtime,
    enrollment: Enrollment,
    message: Message,
    outcome: Outcome,
    state: BatchState,
    now: datetime,
    report: BatchReport,
) -> None:
    decision = outcome.pending.decision
    key = (enrollment.sequence_key, decision.step_id)
    message.subject = outcome.subject[:500]
    message.message_id = outcome.message_id
    if outcome.status == "sent":
        message.status, message.sent_at, message.error = "sent", now, ""
        _event(session, message, "sent", now, {"step": decision.step_id})
        report.sent[key] += 1
        _move_past(enrollment, decision)
        enrollment.step_started_at = now
        state.recent_sends[message.lead_id].append(now)
        advance(session, rt, enrollment, state, now, report, may_send=False)
    elif outcome.status == "bounced":
        _bounce(session, enrollment, message, outcome.error, now)
        report.problems["bounced"] += 1
    elif outcome.status == "retry" and message.attempts < rt.settings.send_max_retries:
        message.status, message.error = "retry", outcome.error
        retry_at = now + retry_backoff(message.attempts)
        _defer(
            session, enrollment, Defer(decision.step_id, retry_at, "smtp temporary failure"), now
        )
        report.deferred[(*key, "smtp temporary failure")] += 1
    else:
        message.status, message.error = "failed", outcome.error
        _event(session, message, "failed", now, {"error": outcome.error})
        _finish(enrollment, "exited", f"delivery failed: {outcome.error}"[:200], now)
        report.problems["failed"] += 1


def retry_backoff(attempts: int) -> timedelta:
    """1, 2, 4, 8 ... minutes, at most an hour: a greylisting server asks again within that."""
    return timedelta(minutes=min(60, 2 ** max(0, attempts - 1)))


def _bounce(
    session: Session, enrollment: Enrollment, message: Message, error: str, now: datetime
) -> None:
    message.status, message.error = "bounced", error
    _event(session, message, "bounced", now, {"error": error})
    email = message.to_email.lower()
    if session.scalar(select(Suppression.id).where(Suppression.email == email)) is None:
        session.add(Suppression(email=email, reason="bounced", detail=error[:1000], created_at=now))
    _finish(enrollment, "exited", "suppressed: bounced", now)


def _event(
    session: Session, message: Message, event_type: str, now: datetime, data: dict[str, Any]
) -> None:
    record_event(
        session,
        lead_id=message.lead_id,
        message_id=message.id,
        event_type=event_type,
        at=now,
        dedupe=_event_key(event_type, message),
        data={"sequence": message.sequence_key, **data},
    )


def _event_key(event_type: str, message: Message) -> str:
    return f"{event_type}:{message.id}:{message.attempts}"
