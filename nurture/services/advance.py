"""Advancing claimed enrollments: load the batch, ask the core what to do, store it, send.

At most one message per (enrollment, step): the message row is claimed (status
``sending``) and committed before the transport is called, and marked after. A row still
``sending`` when the step is next looked at means the process died mid-send: it becomes
``unknown`` and is never blindly resent.

One enrollment cannot sink its batch: the batch is advanced (and its outcomes recorded) in
one savepoint, and if anything in it fails, the savepoint is rolled back and the batch is
redone one savepoint per enrollment. An enrollment that fails alone is parked (same step,
due again in an hour, the error in ``last_deferral``); the others go on. A savepoint per
enrollment from the start would cost four statements per message, most of what a send
may cost on PostgreSQL."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import func, inspect, or_, select
from sqlalchemy.orm import Session

from nurture.authoring.templates import LEAD_FIELDS, LeadData, lead_fields
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
from nurture.core.timing import retry_backoff
from nurture.core.vocabulary import DELIVERY_EVENTS
from nurture.db.models import Enrollment, Event, Lead, Message, Suppression
from nurture.db.session import transaction
from nurture.services.catalog import Catalog
from nurture.services.enrollment import enroll
from nurture.services.erasure import suppression_keys
from nurture.services.scheduler import Claim, abandoned_retry_error, take_over
from nurture.services.sending import Outcome, PendingSend, deliver

log = logging.getLogger(__name__)

# Messages that count towards the frequency cap: anything that may have reached the lead.
CAPPED_STATUSES = ("sent", "sending", "unknown")
# Event types that are the engine's own bookkeeping, not lead behavior.
# Enough hops for any sane sequence; a guard against a bug looping in one batch.
MAX_DECISIONS_PER_RUN = 20
# The position of an enrollment that sent its last step; no step has this id.
END_OF_SEQUENCE = "__end__"
# session.info keys (see record_event): the events the session added, by dedupe key, and
# dedupe keys looked up in bulk and known to be absent from the database.
_UNFLUSHED_EVENTS = "nurture.unflushed_events"
_ABSENT_EVENTS = "nurture.absent_events"
# The event a send outcome records (a retry with attempts left defers instead).
_OUTCOME_EVENTS = {
    "sent": "sent",
    "bounced": "bounced",
    "retry": "failed",
    "failed": "failed",
    "unknown": "unknown",
}
# Why a retry outcome is final when the run that sent it no longer holds the enrollment.
NOT_OURS = "this run no longer holds the enrollment (its lease ran out, or it exited)"
# An enrollment that failed unexpectedly waits this long before it is tried again.
PARK_DELAY = timedelta(hours=1)

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
    recent_sends: dict[int, list[datetime]]
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


def process_claims(rt: Runtime, claims: list[Claim], now: datetime) -> BatchReport:
    """Advance the claimed enrollments as far as they go at ``now``, sending what is due."""
    report = BatchReport()
    lease = timedelta(seconds=rt.settings.claim_lease_seconds)
    with transaction(rt.sessions) as session:
        run_token, ids = take_over(session, claims, now, lease)
        if not ids:
            return report
        pending = _advance_all(session, rt, ids, now, report)
    # The claims above are committed: only now is the transport called.
    outcomes = deliver(rt, pending, now)
    with transaction(rt.sessions) as session:
        _record_outcomes(session, rt, outcomes, run_token, now, report)
    return report


def _advance_all(
    session: Session, rt: Runtime, ids: list[int], now: datetime, report: BatchReport
) -> list[PendingSend]:
    enrollments = list(session.scalars(select(Enrollment).where(Enrollment.id.in_(ids))))
    period = rt.cap.period
    state = load_state(session, enrollments, now, period)

    def step(enrollment: Enrollment, into: BatchReport) -> PendingSend | None:
        return advance(session, rt, enrollment, state, now, into, may_send=True)

    def park(enrollment: Enrollment, exc: Exception) -> None:
        log.error("enrollment %s not advanced: %s", enrollment.id, _describe(exc), exc_info=exc)
        _forget_unsaved(state, enrollment)
        _park(enrollment, exc, now)
        report.problems["error"] += 1

    # The savepoint's commit is the batch's one flush: it inserts the new message rows (a
    # flush per message costs statements each), whose ids the Message-ID and links need.
    sends = _in_savepoints(
        session,
        enrollments,
        step,
        park,
        lambda: state.refill(load_state(session, enrollments, now, period)),
        report,
    )
    return [_with_message_id(send, state) for send in sends if send is not None]


def _in_savepoints(
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
        log.warning("batch of %d failed (%s); redoing it one by one", len(items), _describe(exc))
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


def _forget_unsaved(state: BatchState, enrollment: Enrollment) -> None:
    """Drop what a rolled-back savepoint left in ``state`` for ``enrollment``."""
    for key in [k for k, m in state.messages.items() if k[0] == enrollment.id]:
        if inspect(state.messages[key]).transient:  # added in the savepoint, now expunged
            del state.messages[key]
    state.forget(enrollment.lead_id)


def _park(enrollment: Enrollment, exc: Exception, now: datetime) -> None:
    """Keep the enrollment at its step, due again after PARK_DELAY, the error recorded."""
    enrollment.last_deferral = f"error: {_describe(exc)}"[:200]
    _schedule(enrollment, enrollment.current_step, now + PARK_DELAY)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _with_message_id(send: PendingSend, state: BatchState) -> PendingSend:
    message = state.messages[(send.enrollment_id, send.decision.step_id)]
    return replace(send, message_id=message.id)


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
_LEAD_ROWS = select(Lead.id, *(getattr(Lead, name) for name in LEAD_FIELDS))


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
) -> dict[int, list[datetime]]:
    sent_or_claimed = func.coalesce(Message.sent_at, Message.created_at)
    rows = session.execute(
        select(Message.lead_id, sent_or_claimed).where(
            Message.lead_id.in_(lead_ids),
            Message.status.in_(CAPPED_STATUSES),
            or_(Message.sent_at >= since, Message.created_at >= since),
        )
    )
    sends: dict[int, list[datetime]] = defaultdict(list)
    for lead_id, at in rows:
        sends[lead_id].append(at)
    return sends


def context_for(rt: Runtime, enrollment: Enrollment, state: BatchState) -> Context:
    lead = state.leads[enrollment.lead_id]
    return Context(
        lead=state.lead_view(lead),
        activity=state.activity.get(enrollment.id, Activity()),
        recent_sends=tuple(state.recent_sends.get(lead.id, ())),
        suppressed=state.suppressed.get(lead.email.lower(), ""),
        default_timezone=rt.settings.default_timezone,
        default_locale=rt.settings.default_locale,
        default_country=rt.settings.default_country,
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
    send = _advance(session, rt, enrollment, state, now, report, may_send=may_send)
    if enrollment.status != "active":
        _abandon_retry(enrollment, state)
    return send


def _advance(
    session: Session,
    rt: Runtime,
    enrollment: Enrollment,
    state: BatchState,
    now: datetime,
    report: BatchReport,
    *,
    may_send: bool,
) -> PendingSend | None:
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
        lead = session.get_one(Lead, enrollment.lead_id)
        lead.journey_stage = decision.journey_stage
        state.leads[lead.id] = lead  # later decisions in this batch see the new stage
        state.forget(lead.id)
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


def _abandon_retry(enrollment: Enrollment, state: BatchState) -> None:
    """A step waiting to retry its send is never retried once the enrollment has left."""
    message = state.messages.get((enrollment.id, enrollment.current_step))
    if message is not None and message.status == "retry":
        message.status = "failed"
        message.error = abandoned_retry_error(enrollment.exit_reason, message.error)


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
        lead=state.lead_view(lead),
        sequence_key=enrollment.sequence_key,
        sequence_name=rt.require_catalog()
        .spec(enrollment.sequence_key, enrollment.sequence_version, session)
        .name,
    )


def _move_past(enrollment: Enrollment, decision: SendEmail) -> None:
    # Past the last step, the core decides Complete on the next pass.
    enrollment.current_step = decision.next_step or END_OF_SEQUENCE


def _record_outcomes(
    session: Session,
    rt: Runtime,
    outcomes: list[Outcome],
    run_token: str,
    now: datetime,
    report: BatchReport,
) -> None:
    """Mark each message's outcome and move its enrollment on, unless the enrollment is no
    longer ours (its lease ran out and another run took it): then only the message is
    marked, and the enrollment is left to the run that holds it."""
    if not outcomes:
        return
    wanted = select(Enrollment).where(
        Enrollment.id.in_([o.pending.enrollment_id for o in outcomes])
    )
    if session.get_bind().dialect.name == "postgresql":
        wanted = wanted.with_for_update()  # no take-over between this check and the update
    enrollments = {e.id: e for e in session.scalars(wanted)}
    ours = {i: e for i, e in enrollments.items() if e.claim_token == run_token}
    messages = {
        m.id: m
        for m in session.scalars(
            select(Message).where(Message.id.in_([o.pending.message_id for o in outcomes]))
        )
    }
    period = rt.cap.period
    state = load_state(session, list(ours.values()), now, period)
    prefetch_events(
        session,
        [
            _event_key(_OUTCOME_EVENTS[o.status], messages[o.pending.message_id])
            for o in outcomes
            if o.status in _OUTCOME_EVENTS and o.pending.message_id in messages
        ],
    )

    def record(outcome: Outcome, into: BatchReport) -> None:
        message = messages.get(outcome.pending.message_id)
        enrollment = ours.get(outcome.pending.enrollment_id)
        _record_outcome(session, rt, enrollment, message, outcome, state, now, into)

    def salvage(outcome: Outcome, exc: Exception) -> None:
        # Moving the enrollment on failed: the message's outcome is still recorded (a sent
        # message must never look unsent), and the enrollment is parked past the step.
        log.error(
            "message %s: outcome %s recorded, enrollment %s parked: %s",
            outcome.pending.message_id,
            outcome.status,
            outcome.pending.enrollment_id,
            _describe(exc),
            exc_info=exc,
        )
        enrollment = ours.get(outcome.pending.enrollment_id)
        message = messages.get(outcome.pending.message_id)
        with session.begin_nested():
            if message is not None:
                ours_now = enrollment is not None
                status, error = _final_status(rt, message, outcome, ours=ours_now)
                _mark_message(session, message, outcome, status, error, now, report)
            if enrollment is not None:
                if outcome.status in ("sent", "unknown"):
                    _move_past(enrollment, outcome.pending.decision)
                    enrollment.step_started_at = now
                _park(enrollment, exc, now)
        report.problems["error"] += 1

    _in_savepoints(
        session,
        outcomes,
        record,
        salvage,
        lambda: state.refill(load_state(session, list(ours.values()), now, period)),
        report,
    )


def _record_outcome(
    session: Session,
    rt: Runtime,
    enrollment: Enrollment | None,
    message: Message | None,
    outcome: Outcome,
    state: BatchState,
    now: datetime,
    report: BatchReport,
) -> None:
    """Mark the message; then, if ``enrollment`` is given (still ours), move it on."""
    if message is None:  # deleted meanwhile (the lead was erased): nothing left to mark
        log.warning("message %s: outcome not recorded, the row is gone", outcome.pending.message_id)
        return
    status, error = _final_status(rt, message, outcome, ours=enrollment is not None)
    _mark_message(session, message, outcome, status, error, now, report)
    if enrollment is None:
        log.warning("enrollment %s: claim lost before its outcome", outcome.pending.enrollment_id)
        report.problems["claim lost"] += 1
        return
    decision = outcome.pending.decision
    _move_enrollment(session, rt, enrollment, message, decision, status, error, state, now, report)


def _final_status(
    rt: Runtime, message: Message, outcome: Outcome, *, ours: bool
) -> tuple[str, str]:
    """The message's status and error for ``outcome``: a retry becomes a failure when the
    attempts are used up, or when no run of ours holds the enrollment to retry it."""
    status, error = outcome.status, outcome.error
    if status == "retry" and message.attempts >= rt.settings.send_max_retries:
        return "failed", error
    if status == "retry" and not ours:
        return "failed", f"{error}; not retried: {NOT_OURS}"
    return status, error


def _mark_message(
    session: Session,
    message: Message,
    outcome: Outcome,
    status: str,
    error: str,
    now: datetime,
    report: BatchReport,
) -> None:
    step_id = outcome.pending.decision.step_id
    message.subject = outcome.subject[:500]
    message.message_id = outcome.message_id
    message.status, message.error = status, error
    if status == "sent":
        message.sent_at = now
        _event(session, message, "sent", now, {"step": step_id})
        report.sent[(message.sequence_key, step_id)] += 1
    elif status == "unknown":
        _event(session, message, "unknown", now, {"step": step_id, "error": error})
        report.problems["unknown"] += 1
    elif status == "bounced":
        _event(session, message, "bounced", now, {"error": error})
        _suppress_bounced(session, message, error, now)
        report.problems["bounced"] += 1
    elif status == "failed":
        _event(session, message, "failed", now, {"error": error})
        report.problems["failed"] += 1


def _move_enrollment(
    session: Session,
    rt: Runtime,
    enrollment: Enrollment,
    message: Message,
    decision: SendEmail,
    status: str,
    error: str,
    state: BatchState,
    now: datetime,
    report: BatchReport,
) -> None:
    if status in ("sent", "unknown"):  # unknown: it may have left, so it is never resent
        _move_past(enrollment, decision)
        enrollment.step_started_at = now
        state.recent_sends[message.lead_id].append(now)
        advance(session, rt, enrollment, state, now, report, may_send=False)
    elif status == "bounced":
        _finish(enrollment, "exited", "suppressed: bounced", now)
    elif status == "retry":
        retry_at = now + retry_backoff(message.attempts)
        _defer(
            session, enrollment, Defer(decision.step_id, retry_at, "smtp temporary failure"), now
        )
        report.deferred[(enrollment.sequence_key, decision.step_id, "smtp temporary failure")] += 1
    else:
        _finish(enrollment, "exited", f"delivery failed: {error}"[:200], now)


def _suppress_bounced(session: Session, message: Message, error: str, now: datetime) -> None:
    email = message.to_email.lower()
    if session.scalar(select(Suppression.id).where(Suppression.email == email)) is None:
        session.add(Suppression(email=email, reason="bounced", detail=error[:1000], created_at=now))


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
