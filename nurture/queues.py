"""The Celery app's configuration and the producer side of the queues: what the web
process and beat enqueue, by task name (the tasks themselves are in nurture.worker).

Nothing connects at import time; a producer connects on its first send."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

from celery import Celery

from nurture.settings import Settings

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
SEND_QUEUE, EVENTS_QUEUE, DEFAULT_QUEUE = "send", "events", "default"
TICK_TASK = "nurture.tick"
ADVANCE_TASK = "nurture.advance"
EVENTS_TASK = "nurture.events.process"
HANDOFFS_TASK = "nurture.handoffs.deliver"


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
            ADVANCE_TASK: {"queue": SEND_QUEUE},
            TICK_TASK: {"queue": DEFAULT_QUEUE},
            "nurture.handoffs.*": {"queue": DEFAULT_QUEUE},
            "nurture.events.*": {"queue": EVENTS_QUEUE},
        },
        beat_schedule={"nurture-tick": {"task": TICK_TASK, "schedule": settings.tick_seconds}},
        broker_connection_retry_on_startup=True,
        enable_utc=True,
        timezone="UTC",
    )
    return celery


class Queues:
    """The producer: enqueue work for the workers by task name."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @cached_property
    def celery(self) -> Celery:
        return create_celery(self._settings)

    def events(self, event_ids: Sequence[int]) -> None:
        """Score stored events and run the funnel on them (the ``events`` queue)."""
        if event_ids:
            self.celery.send_task(EVENTS_TASK, args=[list(event_ids)], queue=EVENTS_QUEUE)
