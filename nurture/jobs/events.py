"""Processing stored events in their own transactions: right away, in batches, in the
background (the workers), and the periodic catch-up of events nobody processed.

Where it runs: in embedded mode (no broker), the API runs it inline in the transaction
that stores the events (:func:`nurture.funnel.pipeline.process_stored`), and the web
process hands tracking hits to a background thread that scores them in batches. With a
broker, both enqueue the Celery task ``nurture.events.process`` on the ``events`` queue
(:func:`submit`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select, text

from nurture.db.models import UNSCORED_EVENTS, Event
from nurture.db.session import transaction
from nurture.funnel.pipeline import process_events
from nurture.runtime import Runtime

log = logging.getLogger(__name__)

# Events per scoring transaction when working through a backlog.
BATCH = 1000
# The periodic sweep (sweep_unscored): events younger than this belong to the pipeline
# that stored them (the API, the tracking queue, the workers); at most this many per pass.
SWEEP_GRACE = timedelta(minutes=2)
SWEEP_LIMIT = 2000


def submit(rt: Runtime, event_ids: Sequence[int], now: datetime) -> None:
    """Have stored events processed: by the workers when a broker is configured, else now,
    in this process."""
    if not event_ids:
        return
    if rt.queues is not None:
        rt.queues.events(event_ids)
    else:
        process_now(rt, event_ids, now)


def process_now(rt: Runtime, event_ids: Sequence[int], now: datetime) -> None:
    """Process events in their own transactions, in batches."""
    ids = list(event_ids)
    funnel = rt.funnel()
    for start in range(0, len(ids), BATCH):
        with transaction(rt.sessions) as session:
            process_events(session, ids[start : start + BATCH], now, funnel)


def process_unscored(
    rt: Runtime, now: datetime, limit: int = 0, *, stored_before: datetime | None = None
) -> int:
    """Work through events stored but never scored (e.g. the process stopped before it got
    to them, or the engine wrote them: its ``bounced``); returns how many. ``limit`` 0: all
    of them. ``stored_before``: only events stored before then."""
    done, last_id = 0, 0
    while not limit or done < limit:
        size = BATCH if not limit else min(BATCH, limit - done)
        # The exact text of the partial index ix_events_unscored, so SQLite uses it too.
        query = select(Event.id).where(text(UNSCORED_EVENTS), Event.id > last_id)
        if stored_before is not None:
            query = query.where(Event.created_at < stored_before)
        with rt.sessions() as session:
            ids = list(session.scalars(query.order_by(Event.id).limit(size)))
        if not ids:
            break
        process_now(rt, ids, now)
        done, last_id = done + len(ids), ids[-1]
    return done


def sweep_unscored(rt: Runtime, now: datetime) -> int:
    """The engine's periodic catch-up: score events left unscored for SWEEP_GRACE (the
    engine's own ``bounced``, processing that was lost), at most SWEEP_LIMIT per pass.
    Younger events are left to the pipeline that stored them. Failures are logged."""
    try:
        done = process_unscored(rt, now, SWEEP_LIMIT, stored_before=now - SWEEP_GRACE)
    except Exception:  # the send pass must go on; the next pass tries again
        log.exception("scoring unscored events failed")
        return 0
    if done:
        log.info("scored %d events left unscored", done)
    return done
