"""The web process's event queue: stored events handed to a sink on one thread, in batches."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

# Events per batch handed to the sink (one scoring transaction, or one Celery task).
BATCH = 1000
# How long the background processor lets a batch gather before scoring it.
LINGER_SECONDS = 0.5


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
