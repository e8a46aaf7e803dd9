"""What happens to stored events: scoring, then the funnel. Events are stored before they
get here; this part is derived and can always be run again (``nurture events process``).

Where it runs: in embedded mode (no broker), the API runs it inline in the transaction
that stores the events (``process_stored``: they are stored already marked scored, and
processed in a savepoint, so a failure leaves them stored and unscored), and the web
process hands tracking hits to a background thread that scores them in batches. With a
broker, both enqueue the Celery task ``nurture.events.process`` on the ``events`` queue."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from nurture.db.batches import chunks, one_of
from nurture.db.models import UNSCORED_EVENTS, Event
from nurture.db.session import transaction
from nurture.funnel.loading import LifecycleConfigError
from nurture.funnel.stages import Funnel, evaluate_leads
from nurture.scoring.ledger import StoredEvent, rules_for, score_claimed, score_events
from nurture.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)

PROCESS_TASK = "nurture.events.process"
EVENTS_QUEUE = "events"
# Events per scoring transaction when working through a backlog.
BATCH = 1000
# How long the background processor lets a batch gather before scoring it.
LINGER_SECONDS = 0.5
# The engine's own bookkeeping: nothing to score (bounces are scored: a negative rule).
# nurture.db.models.UNSCORED_EVENTS names the same types.
UNSCORED_TYPES = ("sent", "deferred", "failed", "unknown")
# The periodic sweep (sweep_unscored): events younger than this belong to the pipeline
# that stored them (the API, the tracking queue, the workers); at most this many per pass.
SWEEP_GRACE = timedelta(minutes=2)
SWEEP_LIMIT = 2000

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def process_events(
    session: Session, event_ids: Sequence[int], now: datetime, settings: Settings
) -> None:
    """Score the events, then evaluate the leads they touched (in the caller's transaction)."""
    if not event_ids:
        return
    affected = score_events(session, event_ids, now, rules=rules_for(settings))
    log.debug("scored %d events of %d leads", len(event_ids), len(affected))
    evaluate_leads(session, sorted(affected), now, _funnel(settings))


def _funnel(settings: Settings) -> Funnel | None:
    """The funnel leads are evaluated with; None when lifecycle.yaml has errors (scoring
    stands; `nurture validate` says why)."""
    try:
        return Funnel.load(settings)
    except LifecycleConfigError as exc:
        log.error("lifecycle.yaml has errors, leads not evaluated: %s", exc)
        return None


def process_stored(
    session: Session, events: Sequence[StoredEvent], now: datetime, settings: Settings
) -> None:
    """Process events stored in this transaction with ``scored_at`` already set: no claim,
    no second commit. Processing runs in a savepoint: when it fails, the events stay stored
    and are marked unscored again (``process_unscored`` catches them up), as when
    processing after the commit fails."""
    if not events:
        return
    try:
        with session.begin_nested():
            affected = score_claimed(session, events, now, rules=rules_for(settings))
            evaluate_leads(session, sorted(affected), now, _funnel(settings))
    except Exception:  # stored is what counts
        log.exception("processing %d stored events failed; they stay unscored", len(events))
        for chunk in chunks(sorted(event.id for event in events)):
            session.execute(
                update(Event)
                .where(one_of(session, Event.id, chunk))
                .values(scored_at=None)
                .execution_options(synchronize_session=False)
            )


def process_now(
    sessions: sessionmaker[Session], event_ids: Sequence[int], now: datetime, settings: Settings
) -> None:
    """Process events in their own transaction, in batches."""
    ids = list(event_ids)
    for start in range(0, len(ids), BATCH):
        with transaction(sessions) as session:
            process_events(session, ids[start : start + BATCH], now, settings)


def process_unscored(
    sessions: sessionmaker[Session],
    now: datetime,
    settings: Settings,
    limit: int = 0,
    *,
    stored_before: datetime | None = None,
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
        with sessions() as session:
            ids = list(session.scalars(query.order_by(Event.id).limit(size)))
        if not ids:
            break
        process_now(sessions, ids, now, settings)
        done, last_id = done + len(ids), ids[-1]
    return done


def sweep_unscored(sessions: sessionmaker[Session], now: datetime, settings: Settings) -> int:
    """The engine's periodic catch-up: score events left unscored for SWEEP_GRACE (the
    engine's own ``bounced``, processing that was lost), at most SWEEP_LIMIT per pass.
    Younger events are left to the pipeline that stored them. Failures are logged."""
    try:
        done = process_unscored(
            sessions, now, settings, SWEEP_LIMIT, stored_before=now - SWEEP_GRACE
        )
    except Exception:  # the send pass must go on; the next pass tries again
        log.exception("scoring unscored events failed")
        return 0
    if done:
        log.info("scored %d events left unscored", done)
    return done


def enqueue(settings: Settings, event_ids: Sequence[int]) -> None:
    """Hand events to the workers (Celery task ``nurture.events.process``)."""
    if event_ids:
        _celery(settings.broker_url).send_task(
            PROCESS_TASK, args=[list(event_ids)], queue=EVENTS_QUEUE
        )


@lru_cache(maxsize=4)
def _celery(broker_url: str) -> Celery:
    # A producer only: the worker module's app is configured the same way.
    from nurture.worker import create_celery

    return create_celery(Settings(broker_url=broker_url))


class BackgroundProcessor:
    """Hands stored events to ``sink`` on one thread, in batches: the web process's event
    queue. ``sink`` scores them (embedded mode) or enqueues one Celery task per batch.
    Events are stored before they are handed over, so a stop loses no event, only its
    scoring, which ``process_unscored`` (``nurture events process``) catches up."""

    def __init__(self, sink: Callable[[list[int]], None], linger: float = LINGER_SECONDS) -> None:
        self._sink = sink
        self._linger = linger
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, event_ids: Sequence[int]) -> None:
        """Queue events for processing (starts the thread on first use)."""
        self._ensure_started()
        for event_id in event_ids:
            self._queue.put(event_id)

    def close(self, timeout: float = 10.0) -> None:
        """Process what is queued, then stop the thread."""
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="nurture-events", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            batch, stopping = ([] if first is None else [first]), first is None
            # Let a batch gather: scoring 500 events at once costs little more than one.
            deadline = time.monotonic() + self._linger
            while not stopping and len(batch) < BATCH:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
            self._process(batch)

    def _process(self, batch: list[int]) -> None:
        if not batch:
            return
        try:
            self._sink(batch)
        except Exception:  # keep the thread alive; process_unscored catches these up
            log.exception("processing %d events failed; they stay unscored", len(batch))
