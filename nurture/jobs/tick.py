"""The scheduler pass: claim what is due and advance it, in batches."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from nurture.jobs.advance import process_claims
from nurture.jobs.events import sweep_unscored
from nurture.jobs.funnel import deliver_notifications, funnel_pass
from nurture.runtime import Runtime
from nurture.sequences.batch import BatchReport
from nurture.sequences.claims import Claim, claim_due

log = logging.getLogger(__name__)

# A pass stops after this many batches even if more is due, so one tick cannot run forever.
MAX_BATCHES_PER_TICK = 1000


def tick(
    rt: Runtime, now: datetime, should_stop: Callable[[], bool] = lambda: False
) -> BatchReport:
    """One embedded pass: claim due enrollments batch by batch and advance them in-process;
    ``should_stop`` is asked between batches (a claimed batch is always finished)."""
    report = BatchReport()
    rt.refresh_program(now)  # rules edited or published since the last pass
    # The engine's bounces of earlier passes, lost events.
    sweep_unscored(rt, now)
    # Cool-downs ending (their leads are due below) and SLAs: database work only.
    funnel_pass(rt, now, deliver=False)
    for _ in range(MAX_BATCHES_PER_TICK):
        if should_stop():
            break
        claims = _claim(rt, now)
        if not claims:
            break
        batch = process_claims(rt, claims, now)
        log.info(
            "batch: %d enrollments, %d sent, %d deferred, %d finished",
            len(claims),
            batch.total_sent,
            sum(batch.deferred.values()),
            sum(batch.finished.values()),
        )
        report.merge(batch)
    # Webhooks POST inline: after the sends, and bounded (a slow receiver delays no mail).
    deliver_notifications(rt, now)
    return report


def dispatch_due(rt: Runtime, now: datetime, send: Callable[[list[Claim]], None]) -> int:
    """One distributed pass: claim due enrollments and hand each batch to ``send`` (a Celery
    task); returns how many were claimed. Workers advance them."""
    claimed = 0
    rt.refresh_program(now)  # rules edited or published since the last pass
    # The engine's bounces, lost events: a bounded batch.
    sweep_unscored(rt, now)
    # Cool-downs ending and SLAs; webhooks are their own task (nurture.handoffs.deliver).
    funnel_pass(rt, now, deliver=False)
    for _ in range(MAX_BATCHES_PER_TICK):
        claims = _claim(rt, now)
        if not claims:
            break
        send(claims)
        claimed += len(claims)
    return claimed


def _claim(rt: Runtime, now: datetime) -> list[Claim]:
    return claim_due(rt.sessions, now, rt.settings.batch_size, rt.drip().lease)
