"""What the web handlers share: the runtime, the bot rules, the clock, the hit writer and
where stored events go next. Built once per app; handlers reach it through
``request.app.state``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fastapi import Request

from nurture.bootstrap import Runtime
from nurture.jobs.events import BackgroundProcessor, enqueue, process_now
from nurture.sequences.catalog import Catalog
from nurture.settings import Settings
from nurture.tracking.bots import BotRules
from nurture.tracking.hits import HitStore
from nurture.web.capture import HitWriter

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class WebContext:
    """Shared state of one app instance (one per worker process)."""

    runtime: Runtime
    rules: BotRules
    hits: HitStore
    clock: Clock = utc_now
    _catalog_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
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

    def catalog(self) -> Catalog:
        """The sequences, loaded on first use (from the YAML folder, else the database)."""
        with self._catalog_lock:
            if self.runtime.catalog is None:
                if self.runtime.settings.sequences_dir.is_dir():
                    self.runtime.load_catalog(self.clock())
                else:
                    self.runtime.catalog_from_db()
            return self.runtime.require_catalog()

    def process_api_events(self, event_ids: Sequence[int]) -> None:
        """Score events the API just stored: inline (embedded mode) or on the events queue."""
        if not event_ids:
            return
        try:
            if self.runtime.settings.broker_url:
                enqueue(self.runtime.settings, event_ids)
            else:
                with self.writing():
                    process_now(
                        self.runtime.sessions, event_ids, self.clock(), self.runtime.settings
                    )
        except Exception:  # stored is what counts; `nurture events process` catches up
            log.exception("processing %d stored events failed; they stay unscored", len(event_ids))

    def process_hits(self, event_ids: Sequence[int]) -> None:
        """Score tracking hits later, in batches: on the processor's thread."""
        if event_ids:
            self.processor.submit(event_ids)

    def _process_batch(self, event_ids: list[int]) -> None:
        if self.runtime.settings.broker_url:
            enqueue(self.runtime.settings, event_ids)  # one task per batch
            return
        with self.writing():
            process_now(self.runtime.sessions, event_ids, self.clock(), self.runtime.settings)

    def close(self) -> None:
        """Record the queued hits, process the queued events, stop the threads."""
        self.writer.close()
        self.processor.close()


async def web_context(request: Request) -> WebContext:
    """The app's shared state (a FastAPI dependency)."""
    context: WebContext = request.app.state.nurture
    return context
