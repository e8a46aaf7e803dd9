"""The Celery app: ``celery -A nurture.worker worker`` and ``celery -A nurture.worker beat``.

Tasks are thin: they take ids, call a service, and declare their retry policy. Waits live
in the database (``next_run_at``), never in broker countdowns: with Redis, an ETA task is
redelivered after the visibility timeout and would run twice."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from celery import Celery, signals
from sqlalchemy.exc import OperationalError

from nurture.bootstrap import Runtime, build_runtime
from nurture.db.session import transaction
from nurture.services.advance import process_claims
from nurture.services.lifecycle import deliver_notifications
from nurture.services.pipeline import process_events
from nurture.services.scheduler import Claim
from nurture.services.ticks import dispatch_due
from nurture.settings import (
    InsecureSettings,
    Settings,
    load_settings,
    require_strong_secret_key,
)

log = logging.getLogger(__name__)
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
SEND_QUEUE, EVENTS_QUEUE, DEFAULT_QUEUE = "send", "events", "default"

_runtime: Runtime | None = None


def create_celery(settings: Settings) -> Celery:
    """A Celery app configured for at-most-once sending (nothing connects yet)."""
    celery = Celery("nurture", broker=settings.broker_url or DEFAULT_BROKER)
    celery.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        # Acknowledge after the task ran: a worker killed mid-task gets it redelivered;
        # the claim tokens and message rows make the redelivery harmless.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One task at a time per worker process: a slow SMTP batch holds no others hostage.
        worker_prefetch_multiplier=1,
        task_default_queue=DEFAULT_QUEUE,
        task_routes={
            "nurture.advance": {"queue": SEND_QUEUE},
            "nurture.tick": {"queue": DEFAULT_QUEUE},
            "nurture.handoffs.*": {"queue": DEFAULT_QUEUE},
            "nurture.events.*": {"queue": EVENTS_QUEUE},
        },
        beat_schedule={
            "nurture-tick": {"task": "nurture.tick", "schedule": settings.tick_seconds},
        },
        broker_connection_retry_on_startup=True,
        enable_utc=True,
        timezone="UTC",
    )
    return celery


def runtime() -> Runtime:
    """This worker process's runtime, built on first use (never at import)."""
    global _runtime
    if _runtime is None:
        settings = load_settings()
        # A worker has a broker: what it signs is served by some web process elsewhere.
        require_strong_secret_key(settings, "celery worker")
        rt = build_runtime(settings)
        now = datetime.now(UTC)
        if rt.settings.sequences_dir.is_dir():
            rt.load_catalog(now)
        else:
            rt.catalog_from_db()
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


@app.task(name="nurture.tick", ignore_result=True)
def tick_task() -> int:
    """Beat's pass: claim due enrollments and dispatch them to the send queue."""
    claimed = dispatch_due(runtime(), datetime.now(UTC), _dispatch)
    if claimed:
        log.info("tick: dispatched %d enrollments", claimed)
    # Webhooks POST to outside receivers: never inline in the tick (a slow one delays it).
    deliver_handoffs_task.delay()
    return claimed


@app.task(name="nurture.handoffs.deliver", ignore_result=True)
def deliver_handoffs_task() -> int:
    """Deliver due hand-off webhooks (a bounded batch; the rest on the next tick)."""
    report = deliver_notifications(runtime(), datetime.now(UTC))
    return report.delivered


def _dispatch(claims: list[Claim]) -> None:
    advance_task.delay([[c.enrollment_id, c.token] for c in claims])


@app.task(
    name="nurture.advance",
    ignore_result=True,
    autoretry_for=(OperationalError,),  # database briefly away: retry soon
    retry_backoff=2,
    retry_backoff_max=60,
    max_retries=5,
)
def advance_task(claims: list[list[int | str]]) -> int:
    """Advance a batch of claimed enrollments (ids and claim tokens) and send what is due."""
    parsed = [Claim(int(enrollment_id), str(token)) for enrollment_id, token in claims]
    report = process_claims(runtime(), parsed, datetime.now(UTC))
    return report.total_sent


@app.task(
    name="nurture.events.process",
    ignore_result=True,
    autoretry_for=(OperationalError,),
    retry_backoff=2,
    retry_backoff_max=60,
    max_retries=5,
)
def process_events_task(event_ids: list[int]) -> int:
    """Score stored events and move their leads through the funnel (the events queue)."""
    rt = runtime()
    with transaction(rt.sessions) as session:
        process_events(session, [int(i) for i in event_ids], datetime.now(UTC), rt.settings)
    return len(event_ids)
