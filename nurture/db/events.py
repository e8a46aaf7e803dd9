"""Storing events with their dedupe keys without a query per event: the unflushed events of a
session and keys known to be absent are remembered in session.info."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from nurture.db.models import Event

# session.info keys (see record_event): the events the session added, by dedupe key, and
# dedupe keys looked up in bulk and known to be absent from the database.
_UNFLUSHED_EVENTS = "nurture.unflushed_events"


_ABSENT_EVENTS = "nurture.absent_events"


def record_event(
    session: Session,
    *,
    lead_id: int | None,
    event_type: str,
    at: datetime,
    dedupe: str,
    data: dict[str, Any],
    message_id: int | None = None,
) -> None:
    """Store an event unless one with the same dedupe key exists."""
    # The check must not autoflush: that would write a batch's rows one message at a time.
    # An event this session added and has not flushed yet is looked up here instead.
    added: dict[str, Event] = session.info.setdefault(_UNFLUSHED_EVENTS, {})
    earlier = added.get(dedupe)
    if earlier is not None and inspect(earlier).pending:
        return
    absent: set[str] = session.info.get(_ABSENT_EVENTS, set())
    if dedupe in absent:
        absent.discard(dedupe)  # from now on the event is in `added`, or in the database
        exists = None
    else:
        with session.no_autoflush:
            exists = session.scalar(select(Event.id).where(Event.dedupe_key == dedupe))
    if exists is None:
        event = Event(
            lead_id=lead_id,
            message_id=message_id,
            type=event_type,
            occurred_at=at,
            dedupe_key=dedupe,
            data=data,
        )
        session.add(event)
        added[dedupe] = event


def prefetch_events(session: Session, dedupe_keys: list[str]) -> None:
    """Look dedupe keys up in one query, so that record_event, called for them next in the
    same session, need not query each one."""
    if not dedupe_keys:
        return
    with session.no_autoflush:
        query = select(Event.dedupe_key).where(Event.dedupe_key.in_(dedupe_keys))
        stored = set(session.scalars(query))
    absent: set[str] = session.info.setdefault(_ABSENT_EVENTS, set())
    absent.update(key for key in dedupe_keys if key not in stored)
