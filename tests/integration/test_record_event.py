"""record_event stores an event once per dedupe key without flushing the session per event
(which would write a batch row by row), and prefetch_events replaces its per-event query."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session, sessionmaker

from nurture.db.events import prefetch_events, record_event
from nurture.db.models import Event, Lead
from nurture.db.session import transaction

NOW = datetime(2025, 3, 4, 9, 30, tzinfo=UTC)


def add_lead(session: Session) -> int:
    lead = Lead(email="ann@example.com")
    session.add(lead)
    session.flush()
    return lead.id


def record(session: Session, lead_id: int, dedupe: str) -> None:
    record_event(
        session, lead_id=lead_id, event_type="deferred", at=NOW, dedupe=dedupe, data={"n": 1}
    )


def stored(factory: sessionmaker[Session]) -> list[str]:
    with factory() as session:
        return sorted(session.scalars(select(Event.dedupe_key)))


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[str]]:
    """Every SQL statement the engine runs while the test runs."""
    seen: list[str] = []

    def remember(*args: Any) -> None:
        seen.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", remember)
    yield seen
    event.remove(engine, "before_cursor_execute", remember)


def test_the_same_key_twice_in_one_session_is_stored_once(
    session_factory: sessionmaker[Session], statements: list[str]
) -> None:
    with transaction(session_factory) as session:
        lead_id = add_lead(session)
        statements.clear()
        record(session, lead_id, "deferred:1")
        record(session, lead_id, "deferred:1")
        record(session, lead_id, "deferred:2")
        # Nothing was written yet: the checks did not flush the session.
        assert not [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    assert stored(session_factory) == ["deferred:1", "deferred:2"]


def test_a_key_stored_by_an_earlier_transaction_is_not_stored_again(
    session_factory: sessionmaker[Session],
) -> None:
    with transaction(session_factory) as session:
        lead_id = add_lead(session)
        record(session, lead_id, "deferred:1")
    with transaction(session_factory) as session:
        record(session, lead_id, "deferred:1")
    assert stored(session_factory) == ["deferred:1"]


def test_an_event_rolled_back_is_recorded_again_by_the_same_session(
    session_factory: sessionmaker[Session],
) -> None:
    with transaction(session_factory) as session:
        lead_id = add_lead(session)
    with session_factory() as session:
        session.begin()
        record(session, lead_id, "deferred:1")
        session.rollback()
        session.begin()
        record(session, lead_id, "deferred:1")
        session.commit()
    assert stored(session_factory) == ["deferred:1"]


def test_prefetched_keys_need_no_query_and_still_dedupe(
    session_factory: sessionmaker[Session], statements: list[str]
) -> None:
    with transaction(session_factory) as session:
        lead_id = add_lead(session)
        record(session, lead_id, "sent:1:1")
    with transaction(session_factory) as session:
        prefetch_events(session, ["sent:1:1", "sent:2:1", "sent:3:1"])
        statements.clear()
        for key in ("sent:2:1", "sent:2:1", "sent:3:1"):
            record(session, lead_id, key)
        assert statements == []  # answered by the prefetch, then by what was added
        record(session, lead_id, "sent:1:1")  # stored already: checked, not added again
    assert stored(session_factory) == ["sent:1:1", "sent:2:1", "sent:3:1"]
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 3
