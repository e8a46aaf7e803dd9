"""Recording what became of each message of a batch, and moving its enrollment on: past the
step when it was sent (or may have been), to a retry, or out of the sequence."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.db.events import prefetch_events, record_event
from nurture.db.models import Enrollment, Message, Suppression
from nurture.delivery.compose import EmailContent
from nurture.delivery.sending import Outcome
from nurture.sequences.advance import advance, defer, finish, move_past, park
from nurture.sequences.batch import BatchReport, BatchState, describe, in_savepoints, load_state
from nurture.sequences.drip import Drip
from nurture.sequences.engine import (
    Defer,
)
from nurture.sequences.timing import retry_backoff

# The event a send outcome records (a retry with attempts left defers instead).
_OUTCOME_EVENTS = {
    "sent": "sent",
    "bounced": "bounced",
    "retry": "failed",
    "failed": "failed",
    "unknown": "unknown",
}

log = logging.getLogger(__name__)


# Why a retry outcome is final when the run that sent it no longer holds the enrollment.
NOT_OURS = "this run no longer holds the enrollment (its lease ran out, or it exited)"


def record_outcomes(
    session: Session,
    drip: Drip,
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
    ours = _still_ours(session, outcomes, run_token)
    messages = _messages_of(session, outcomes)
    state = load_state(session, list(ours.values()), now, drip.cap.period)
    prefetch_events(session, _outcome_keys(outcomes, messages))

    def record(outcome: Outcome, into: BatchReport) -> None:
        message = messages.get(outcome.pending.message_id)
        enrollment = ours.get(outcome.pending.enrollment_id)
        _record_outcome(session, drip, enrollment, message, outcome, state, now, into)

    def salvage(outcome: Outcome, exc: Exception) -> None:
        enrollment = ours.get(outcome.pending.enrollment_id)
        message = messages.get(outcome.pending.message_id)
        _salvage(session, drip, outcome, exc, enrollment, message, now, report)

    def reload() -> None:
        state.refill(load_state(session, list(ours.values()), now, drip.cap.period))

    in_savepoints(session, outcomes, record, salvage, reload, report)


def _still_ours(session: Session, outcomes: list[Outcome], run_token: str) -> dict[int, Enrollment]:
    """The outcomes' enrollments this run still holds, by id (locked on PostgreSQL)."""
    wanted = select(Enrollment).where(
        Enrollment.id.in_([o.pending.enrollment_id for o in outcomes])
    )
    if session.get_bind().dialect.name == "postgresql":
        wanted = wanted.with_for_update()  # no take-over between this check and the update
    return {e.id: e for e in session.scalars(wanted) if e.claim_token == run_token}


def _messages_of(session: Session, outcomes: list[Outcome]) -> dict[int, Message]:
    query = select(Message).where(Message.id.in_([o.pending.message_id for o in outcomes]))
    return {m.id: m for m in session.scalars(query)}


def _outcome_keys(outcomes: list[Outcome], messages: dict[int, Message]) -> list[str]:
    """The dedupe keys of the events the outcomes will record (looked up in one query)."""
    return [
        _event_key(_OUTCOME_EVENTS[o.status], messages[o.pending.message_id])
        for o in outcomes
        if o.status in _OUTCOME_EVENTS and o.pending.message_id in messages
    ]


def _salvage(
    session: Session,
    drip: Drip,
    outcome: Outcome,
    exc: Exception,
    enrollment: Enrollment | None,
    message: Message | None,
    now: datetime,
    report: BatchReport,
) -> None:
    """Moving the enrollment on failed: the message's outcome is still recorded (a sent
    message must never look unsent), and the enrollment is parked past the step."""
    log.error(
        "message %s: outcome %s recorded, enrollment %s parked: %s",
        outcome.pending.message_id,
        outcome.status,
        outcome.pending.enrollment_id,
        describe(exc),
        exc_info=exc,
    )
    with session.begin_nested():
        if message is not None:
            status, error = _final_status(drip, message, outcome, ours=enrollment is not None)
            _mark_message(session, message, outcome, status, error, now, report)
        if enrollment is not None:
            if outcome.status in ("sent", "unknown"):
                move_past(enrollment, outcome.pending.decision)
                enrollment.step_started_at = now
            park(enrollment, exc, now)
    report.problems["error"] += 1


def _record_outcome(
    session: Session,
    drip: Drip,
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
    status, error = _final_status(drip, message, outcome, ours=enrollment is not None)
    _mark_message(session, message, outcome, status, error, now, report)
    if enrollment is None:
        log.warning("enrollment %s: claim lost before its outcome", outcome.pending.enrollment_id)
        report.problems["claim lost"] += 1
        return
    decision = outcome.pending.decision
    _move_enrollment(
        session, drip, enrollment, message, decision, status, error, state, now, report
    )


def _final_status(drip: Drip, message: Message, outcome: Outcome, *, ours: bool) -> tuple[str, str]:
    """The message's status and error for ``outcome``: a retry becomes a failure when the
    attempts are used up, or when no run of ours holds the enrollment to retry it."""
    status, error = outcome.status, outcome.error
    if status == "retry" and message.attempts >= drip.max_retries:
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
    drip: Drip,
    enrollment: Enrollment,
    message: Message,
    decision: EmailContent,
    status: str,
    error: str,
    state: BatchState,
    now: datetime,
    report: BatchReport,
) -> None:
    if status in ("sent", "unknown"):  # unknown: it may have left, so it is never resent
        move_past(enrollment, decision)
        enrollment.step_started_at = now
        # The message counts towards the cap once, from when it was sent.
        state.recent_sends[message.lead_id][message.id] = now
        advance(session, drip, enrollment, state, now, report, may_send=False)
    elif status == "bounced":
        finish(enrollment, "exited", "suppressed: bounced", now)
    elif status == "retry":
        retry_at = now + retry_backoff(message.attempts)
        defer(session, enrollment, Defer(decision.step_id, retry_at, "smtp temporary failure"), now)
        report.deferred[(enrollment.sequence_key, decision.step_id, "smtp temporary failure")] += 1
    else:
        finish(enrollment, "exited", f"delivery failed: {error}"[:200], now)


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
