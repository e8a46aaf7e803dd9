"""What the web handlers share: the runtime, the bot rules, the clock, the hit writer and
where stored events go next. Built once per app; handlers reach it through
``request.app.state``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

from fastapi import Request

from nurture.core.clock import Clock, utc_now
from nurture.funnel.funnel import Funnel
from nurture.jobs.events import submit
from nurture.program.program import Program
from nurture.runtime import Runtime
from nurture.settings import Settings
from nurture.tracking.bots import BotRules
from nurture.tracking.hits import HitStore
from nurture.tracking.limits import HitLimiter
from nurture.web.capture import HitWriter
from nurture.web.processor import BackgroundProcessor

log = logging.getLogger(__name__)

# How often a request checks for rules edited or published since (a stat or one query).
PROGRAM_REFRESH_SECONDS = 1.0


@dataclass
class WebContext:
    """Shared state of one app instance (one per worker process)."""

    runtime: Runtime
    rules: BotRules
    hits: HitStore
    clock: Clock = utc_now
    _program_lock: threading.Lock = field(default_factory=threading.Lock)
    _checked_at: float = float("-inf")

    def __post_init__(self) -> None:
        self.limiter = HitLimiter.from_settings(self.runtime.settings)
        # Hits go to the writer thread; their event ids, once committed, to the processor.
        self.processor = BackgroundProcessor(self._process_batch)
        self.writer = HitWriter(self.hits, self.rules, self.processor.submit)

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    def writing(self) -> AbstractContextManager[object]:
        """Held around a write transaction: on SQLite the process's writers take turns
        (a lock is fair and fast; SQLite's busy handler sleeps)."""
        return self.hits.write_lock or nullcontext()

    def program(self) -> Program:
        """The program in force: loaded on first use (from the YAML folder, else the
        database), and refreshed when its rules changed (checked at most every second)."""
        with self._program_lock:
            moment = time.monotonic()
            if not self.runtime.loaded or moment - self._checked_at >= PROGRAM_REFRESH_SECONDS:
                self.runtime.refresh_program(self.clock())
                self._checked_at = moment
            return self.runtime.program

    def funnel(self) -> Funnel:
        """The funnel's dependencies for the program in force."""
        self.program()
        return self.runtime.funnel()

    def process_api_events(self, event_ids: Sequence[int]) -> None:
        """Score events the API just stored: inline (embedded mode) or on the events queue."""
        try:
            self._process_batch(list(event_ids))
        except Exception:  # stored is what counts; `nurture events process` catches up
            log.exception("processing %d stored events failed; they stay unscored", len(event_ids))

    def process_hits(self, event_ids: Sequence[int]) -> None:
        """Score tracking hits later, in batches: on the processor's thread."""
        if event_ids:
            self.processor.submit(event_ids)

    def _process_batch(self, event_ids: list[int]) -> None:
        if not event_ids:
            return
        self.program()
        with self.writing():
            submit(self.runtime, event_ids, self.clock())

    def close(self) -> None:
        """Record the queued hits, process the queued events, stop the threads."""
        self.writer.close()
        self.processor.close()


async def web_context(request: Request) -> WebContext:
    """The app's shared state (a FastAPI dependency)."""
    context: WebContext = request.app.state.nurture
    return context
