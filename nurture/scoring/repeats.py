"""Repeated opens and clicks: a human open of a message, or click of one of its links,
scores once within the rules' repeat window. The same link clicked again (a reader coming
back, a browser reloading, a captured request replayed a thousand times) adds nothing, so
no one can push a lead to MQL by replaying a tracking link. Repeats stay on the ledger
with 0 points, saying why."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.db.batches import one_of
from nurture.db.models import Event

REPEATABLE = ("opened", "clicked")
Key = tuple[int, str, int]


def repeated(session: Session, rows: Sequence[Any], window: timedelta) -> set[int]:
    """The ids among ``rows`` (events being scored) that repeat an open of the same message,
    or a click of the same link, counted within ``window`` before them."""
    wanted = [r for r in rows if r.type in REPEATABLE and r.message_id is not None]
    if not wanted:
        return set()
    seen: dict[Key, list[tuple[datetime, int]]] = defaultdict(list)
    for row in session.execute(_same_messages(session, wanted, window)):
        seen[_key(row)].append((row.occurred_at, row.id))
    repeats: set[int] = set()
    for hits in seen.values():
        repeats |= _repeats(sorted(hits), window)
    return repeats & {r.id for r in wanted}


def _same_messages(session: Session, rows: Sequence[Any], window: timedelta) -> Any:
    """Human opens and clicks of these messages, from a window before the earliest row."""
    since = min(r.occurred_at for r in rows) - window
    until = max(r.occurred_at for r in rows)
    messages = sorted({r.message_id for r in rows})
    return select(Event.id, Event.message_id, Event.type, Event.occurred_at, Event.data).where(
        one_of(session, Event.message_id, messages),
        Event.type.in_(REPEATABLE),
        Event.is_human.is_(True),
        Event.occurred_at > since,
        Event.occurred_at <= until,
    )


def _key(row: Any) -> Key:
    position = int((row.data or {}).get("position", 0)) if row.type == "clicked" else 0
    return (int(row.message_id), str(row.type), position)


def _repeats(hits: list[tuple[datetime, int]], window: timedelta) -> set[int]:
    """In time order, a hit counts when no counted hit lies within ``window`` before it."""
    counted: datetime | None = None
    repeats = set()
    for at, event_id in hits:
        if counted is not None and at - counted < window:
            repeats.add(event_id)
        else:
            counted = at
    return repeats
