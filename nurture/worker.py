"""The Celery app: ``celery -A nurture.worker worker`` and ``celery -A nurture.worker beat``.

Tasks are thin: they take ids, call a job, and declare their retry policy. Waits live in
the database (``next_run_at``), never in broker countdowns: with Redis, an ETA task is
redelivered after the visibility timeout and would run twice."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from celery import signals
from sqlalchemy.exc import OperationalError

from nurture.bootstrap import build_runtime
from nurture.db.session import transaction
from nurture.funnel.pipeline import process_events
from nurture.jobs.advance import process_claims
from nurture.jobs.funnel import deliver_notifications
from nurture.jobs.tick import dispatch_due
from nurture.queues import ADVANCE_TASK, EVENTS_TASK, HANDOFFS_TASK, TICK_TASK, create_celery
from nurture.runtime import Runtime
from nurture.sequences.claims import Claim
from nurture.settings import (
    InsecureSettings,
    load_settings,
    require_strong_secret_key,
)

log = logging.getLogger(__name__)

_runtime: Runtime | None = None


def runtime() -> Runtime:
    """This worker process's runtime, built on first use (never at import), with the
    program of the YAML folder or, without it, the latest one published."""
    global _runtime
    if _runtime is None:
        settings = load_settings()
        # A worker has a broker: what it signs is served by some web process elsewhere.
        require_strong_secret_key(settings, "celery worker")
        rt = build_runtime(settings)
        rt.load_program(datetime.now(UTC))
        _runtime = rt
    return _runtime


@signals.worker_init.connect
@signals.beat_init.connect
def refuse_weak_key(**_: object) -> None:
    """A worker or beat with a weak NURTURE_SECRET_KEY does not start (rather than fail
    each task). Celery only logs what a signal handler raises, so this exits."""
    try:
        require_strong_secret_key(load_settings(), "celery worker or beat")
    except InsecureSettings as exc:
        log.critical("refusing to start: %s", exc)
        raise SystemExit(2) from None


app = create_celery(load_settings())


@app.task(name=TICK_TASK, ignore_result=True)
def tick_task() -> int:
    """Beat's pass: claim due enrollments and dispatch them to the send queue."""
    claimed = dispatch_due(runtime(), datetime.now(UTC), _dispatch)
    if claimed:
        log.info("tick: dispatched %d enrollments", claimed)
    # Webhooks POST to outside receivers: never inline in the tick (a slow one delays it).
    deliver_handoffs_task.delay()
    return claimed


@app.task(name=HANDOFFS_TASK, ignore_result=True)
def deliver_handoffs_task() -> int:
    """Deliver due hand-off webhooks (a bounded batch; the rest on the next tick)."""
    report = deliver_notifications(runtime(), datetime.now(UTC))
    return report.delivered


def _dispatch(claims: list[Claim]) -> None:
    advance_task.delay([[c.enrollment_id, c.token] for c in claims])


@app.task(
    name=ADVANCE_TASK,
    ignore_result=True,
    autoretry_for=(OperationalError,),  # database briefly away: retry soon
    retry_backoff=2,
    retry_backoff_max=60,
    max_retries=5,
)
def advance_task(claims: list[list[int | str]]) -> int:
    """Advance a batch of claimed enrollments (ids and claim tokens) and send what is due."""
    parsed = [Claim(int(enrollment_id), str(token)) for enrollment_id, token in claims]
    now = datetime.now(UTC)
    rt = runtime()
    rt.refresh_program(now)
    return process_claims(rt, parsed, now).total_sent


@app.task(
    name=EVENTS_TASK,
    ignore_result=True,
    autoretry_for=(OperationalError,),
    retry_backoff=2,
    retry_backoff_max=60,
    max_retries=5,
)
def process_events_task(event_ids: list[int]) -> int:
    """Score stored events and move their leads through the funnel (the events queue)."""
    now = datetime.now(UTC)
    rt = runtime()
    rt.refresh_program(now)
    with transaction(rt.sessions) as session:
        process_events(session, [int(i) for i in event_ids], now, rt.funnel())
    return len(event_ids)
