"""Group commit for opens and clicks: one writer thread per web process records the hits
that arrive together in one transaction, then answers each of them. A request waits for
the commit that holds its event, so capture stays durable, while the cost of a transaction
is shared by every hit in it (under load, tens per commit).

If a batch fails, its hits are retried one by one, so one bad hit cannot fail the others.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from nurture.tracking.bots import BotRules
from nurture.tracking.hits import HitOutcome, HitRequest, HitStore, record_hits

log = logging.getLogger(__name__)

# Hits per transaction at most (the queue holds what arrives meanwhile).
MAX_BATCH = 500

_Item = tuple[HitRequest, "Future[HitOutcome]"]


class HitWriter:
    """Records hits on its own thread, in batches; ``submit`` returns a future answered
    once the hit's transaction committed. ``stored`` gets the new event ids afterwards."""

    def __init__(
        self, store: HitStore, rules: BotRules, stored: Callable[[Sequence[int]], None]
    ) -> None:
        self._store = store
        self._rules = rules
        self._stored = stored
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, request: HitRequest) -> Future[HitOutcome]:
        """Queue a hit; the future holds its outcome (or the error that stopped it)."""
        future: Future[HitOutcome] = Future()
        self._ensure_started()
        self._queue.put((request, future))
        return future

    def close(self, timeout: float = 10.0) -> None:
        """Record what is queued, then stop the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    def _ensure_started(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="nurture-hits", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch: list[_Item] = [] if first is None else [first]
            stopping = first is None
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
            if batch:
                self._write(batch)
            if stopping:
                return

    def _write(self, batch: list[_Item]) -> None:
        try:
            outcomes = self._record([request for request, _ in batch])
        except Exception:
            log.exception("recording %d hits together failed; trying them one by one", len(batch))
            for item in batch:
                self._write_one(item)
            return
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            future.set_result(outcome)
        self._after(outcomes)

    def _write_one(self, item: _Item) -> None:
        request, future = item
        try:
            [outcome] = self._record([request])
        except Exception as exc:
            future.set_exception(exc)
            return
        future.set_result(outcome)
        self._after([outcome])

    def _record(self, requests: list[HitRequest]) -> list[HitOutcome]:
        with self._store.writing() as conn:
            return record_hits(conn, requests, self._rules)

    def _after(self, outcomes: list[HitOutcome]) -> None:
        ids = [o.event_id for o in outcomes if o.event_id is not None]
        try:
            if ids:
                self._stored(ids)
        except Exception:  # the hits are stored; `nurture events process` scores them later
            log.exception("handing %d stored hits on for scoring failed", len(ids))
