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
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from nurture.db.events import record_event
from nurture.db.models import Enrollment, Lead, Message
from nurture.delivery.compose import EmailContent, PendingSend
from nurture.sequences.batch import (
    BatchReport,
    BatchState,
    context_for,
    describe,
    in_savepoints,
    load_state,
)
from nurture.sequences.catalog import Catalog
from nurture.sequences.claims import abandoned_retry_error
from nurture.sequences.drip import Drip
from nurture.sequences.engine import (
    Complete,
    Decision,
    Defer,
    Exit,
    MoveToStage,
    Position,
    SendEmail,
    WaitUntil,
    decide,
)
from nurture.sequences.enrollment import enroll

log = logging.getLogger(__name__)

# Event types that are the engine's own bookkeeping, not lead behavior.
# Enough hops for any sane sequence; a guard against a bug looping in one batch.
MAX_DECISIONS_PER_RUN = 20
# The position of an enrollment that sent its last step; no step has this id.
END_OF_SEQUENCE = "__end__"
# An enrollment that failed unexpectedly waits this long before it is tried again.
PARK_DELAY = timedelta(hours=1)


def advance_claimed(
    session: Session, drip: Drip, ids: list[int], now: datetime, report: BatchReport
) -> list[PendingSend]:
    enrollments = list(session.scalars(select(Enrollment).where(Enrollment.id.in_(ids))))
    period = drip.cap.period
    state = load_state(session, enrollments, now, period)

    def step(enrollment: Enrollment, into: BatchReport) -> PendingSend | None:
        return advance(session, drip, enrollment, state, now, into, may_send=True)

    def set_aside(enrollment: Enrollment, exc: Exception) -> None:
        log.error("enrollment %s not advanced: %s", enrollment.id, describe(exc), exc_info=exc)
        forget_unsaved(state, enrollment)
        park(enrollment, exc, now)
        report.problems["error"] += 1

    # The savepoint's commit is the batch's one flush: it inserts the new message rows (a
    # flush per message costs statements each), whose ids the Message-ID and links need.
    sends = in_savepoints(
        session,
        enrollments,
        step,
        set_aside,
        lambda: state.refill(load_state(session, enrollments, now, period)),
        report,
    )
    return [with_message_id(send, state) for send in sends if send is not None]


def forget_unsaved(state: BatchState, enrollment: Enrollment) -> None:
    """Drop what a rolled-back savepoint left in ``state`` for ``enrollment``."""
    for key in [k for k, m in state.messages.items() if k[0] == enrollment.id]:
        if inspect(state.messages[key]).transient:  # added in the savepoint, now expunged
            del state.messages[key]
    state.forget(enrollment.lead_id)


def park(enrollment: Enrollment, exc: Exception, now: datetime) -> None:
    """Keep the enrollment at its step, due again after PARK_DELAY, the error recorded."""
    schedule(enrollment, enrollment.current_step, now + PARK_DELAY)
    enrollment.last_deferral = f"error: {describe(exc)}"[:200]


def with_message_id(send: PendingSend, state: BatchState) -> PendingSend:
    message = state.messages[(send.enrollment_id, send.decision.step_id)]
    return replace(send, message_id=message.id)


def advance(
    session: Session,
    drip: Drip,
    enrollment: Enrollment,
    state: BatchState,
    now: datetime,
    report: BatchReport,
    *,
    may_send: bool,
) -> PendingSend | None:
    """Apply the core's decisions to one enrollment until it waits, leaves, or must send."""
    send = _advance(session, drip, enrollment, state, now, report, may_send=may_send)
    if enrollment.status != "active":
        _abandon_retry(enrollment, state)
    return send


def _advance(
    session: Session,
    drip: Drip,
    enrollment: Enrollment,
    state: BatchState,
    now: datetime,
    report: BatchReport,
    *,
    may_send: bool,
) -> PendingSend | None:
    catalog = drip.catalog
    spec = catalog.spec(enrollment.sequence_key, enrollment.sequence_version, session)
    for _ in range(MAX_DECISIONS_PER_RUN):
        position = Position(enrollment.current_step, enrollment.entered_at)
        decision = decide(spec, position, context_for(drip, enrollment, state), now)
        if isinstance(decision, SendEmail):
            if not may_send:  # one send per run; the next tick takes the following one
                schedule(enrollment, decision.step_id, now)
                return None
            pending = _claim_message(session, drip, enrollment, decision, state, now, report)
            if pending:
                return pending
            continue  # the step was already dealt with; move on
        _apply(session, catalog, enrollment, state, decision, now, report)
        return None
    finish(enrollment, "exited", "stopped: too many steps in one run", now)
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
        schedule(enrollment, decision.step_id, decision.run_at)
    elif isinstance(decision, Defer):
        defer(session, enrollment, decision, now)
        report.deferred[(key, decision.step_id, decision.reason)] += 1
    elif isinstance(decision, MoveToStage):
        lead = session.get_one(Lead, enrollment.lead_id)
        lead.journey_stage = decision.journey_stage
        state.leads[lead.id] = lead  # later decisions in this batch see the new stage
        state.forget(lead.id)
        finish(enrollment, "exited", f"moved to {decision.journey_stage}", now)
        session.flush()
        enroll(session, lead, catalog, now)
        report.finished[(key, f"moved to {decision.journey_stage}")] += 1
    elif isinstance(decision, Exit):
        finish(enrollment, "exited", decision.reason, now)
        report.finished[(key, decision.reason)] += 1
    elif isinstance(decision, Complete):
        finish(enrollment, "completed", "completed the sequence", now)
        report.finished[(key, "completed")] += 1


def schedule(enrollment: Enrollment, step_id: str, run_at: datetime) -> None:
    """Run ``step_id`` at ``run_at``, claim released. ``last_deferral`` says why only while
    the run it names is the one scheduled: a new schedule clears it (defer sets it again)."""
    enrollment.current_step = step_id
    enrollment.next_run_at = run_at
    enrollment.claim_token = None
    enrollment.claimed_until = None
    enrollment.last_deferral = ""


def defer(session: Session, enrollment: Enrollment, decision: Defer, now: datetime) -> None:
    schedule(enrollment, decision.step_id, decision.run_at)
    enrollment.last_deferral = f"{decision.reason} until {decision.run_at.isoformat()}"
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


def finish(enrollment: Enrollment, status: str, reason: str, now: datetime) -> None:
    enrollment.status = status
    enrollment.exit_reason = reason[:200]
    enrollment.exited_at = now
    enrollment.next_run_at = None
    enrollment.claim_token = None
    enrollment.claimed_until = None


def _claim_message(
    session: Session,
    drip: Drip,
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
        move_past(enrollment, decision)
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
        message_id=message.id,  # None for a new row until the batch's flush (advance_claimed)
        enrollment_id=enrollment.id,
        decision=decision,
        lead=state.lead_view(lead),
        sequence_key=enrollment.sequence_key,
        sequence_name=drip.catalog.spec(
            enrollment.sequence_key, enrollment.sequence_version, session
        ).name,
    )


def move_past(enrollment: Enrollment, decision: EmailContent) -> None:
    # Past the last step, the core decides Complete on the next pass.
    enrollment.current_step = decision.next_step or END_OF_SEQUENCE
