"""Events the pipeline never saw are scored by the engine's periodic sweep: the engine's
own ``bounced`` (a hard-bounce negative rule) and events whose processing was lost. The
engine's bookkeeping events (sent, deferred, ...) are never scored, and the sweep finds the
events to score through a partial index that holds only them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select, text
from support import SHIPPED, use_program_rules
from support.engine import MONDAY, add_lead, events, make_runtime, tick_at

from nurture.core.vocabulary import UNSCORED_TYPES
from nurture.db.models import UNSCORED_EVENTS, Event, ScoreEntry
from nurture.db.session import transaction
from nurture.delivery.transports import MemoryTransport, TransportError
from nurture.jobs.events import SWEEP_GRACE, sweep_unscored
from nurture.runtime import Runtime
from nurture.scoring.scores import lead_score

GONE = "gone@acme.example"


@pytest.fixture
def rt(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    # The shipped rules (hard_bounce: -30) and funnel; the engine fixtures' sequences.
    memory = MemoryTransport()
    memory.fail_recipient(GONE, TransportError("550 5.1.1 no such user", permanent=True, code=550))
    runtime = make_runtime(db_url, memory)
    use_program_rules(runtime, SHIPPED)
    yield runtime
    runtime.close()


def entries(rt: Runtime, lead_id: int) -> list[tuple[str, float, int | None]]:
    with rt.sessions() as session:
        query = select(ScoreEntry).where(ScoreEntry.lead_id == lead_id).order_by(ScoreEntry.id)
        return [(e.rule, e.points, e.event_id) for e in session.scalars(query)]


def test_a_bounce_in_a_tick_is_scored_by_a_later_tick(rt: Runtime) -> None:
    lead_id = add_lead(rt, GONE)
    other = add_lead(rt, "here@acme.example")
    tick_at(rt, MONDAY)
    (bounce,) = events(rt, "bounced")
    assert bounce.lead_id == lead_id and bounce.scored_at is None
    assert entries(rt, lead_id) == []

    # Within the grace the sweep leaves it to the pipeline that stored it.
    tick_at(rt, MONDAY + SWEEP_GRACE - timedelta(seconds=1))
    assert entries(rt, lead_id) == []

    later = MONDAY + timedelta(minutes=5)
    tick_at(rt, later)
    assert entries(rt, lead_id) == [("hard_bounce", -30.0, bounce.id)]
    (bounce,) = events(rt, "bounced")
    assert bounce.scored_at == later
    with rt.sessions() as session:
        assert lead_score(session, lead_id, later, rules=rt.program.scoring).negative == -30.0
    # The engine's bookkeeping is never scored; the lead that got its mail has no entries.
    assert [e.scored_at for e in events(rt, "sent")] == [None]
    assert entries(rt, other) == []
    tick_at(rt, later + timedelta(hours=1))
    assert entries(rt, lead_id) == [("hard_bounce", -30.0, bounce.id)]  # once


def test_the_sweep_catches_up_lost_processing_in_bounded_passes(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    lead_id = add_lead(rt, "busy@acme.example", enrolled=False)
    with transaction(rt.sessions) as session:
        for n in range(5):
            at = MONDAY + timedelta(minutes=n)
            session.add(
                Event(lead_id=lead_id, type="page_visit", occurred_at=at, dedupe_key=f"v{n}",
                      data={"url": "https://www.ledgerline.example/pricing"}, created_at=at)
            )  # fmt: skip
        for kind in UNSCORED_TYPES:
            session.add(Event(lead_id=lead_id, type=kind, dedupe_key=kind, created_at=MONDAY))
    monkeypatch.setattr("nurture.jobs.events.SWEEP_LIMIT", 3)
    later = MONDAY + timedelta(hours=1)
    assert sweep_unscored(rt, later) == 3
    assert sweep_unscored(rt, later) == 2
    assert sweep_unscored(rt, later) == 0
    with rt.sessions() as session:
        unscored = session.scalars(select(Event.type).where(Event.scored_at.is_(None)))
        assert sorted(unscored) == sorted(UNSCORED_TYPES)


def test_unscored_events_are_found_through_their_partial_index(rt: Runtime) -> None:
    assert "'sent', 'deferred', 'failed', 'unknown'" in UNSCORED_EVENTS
    assert all(f"'{kind}'" in UNSCORED_EVENTS for kind in UNSCORED_TYPES)
    query = f"SELECT id FROM events WHERE {UNSCORED_EVENTS} AND id > 0 ORDER BY id LIMIT 10"
    with rt.engine.connect() as conn:
        if rt.engine.dialect.name == "postgresql":
            conn.execute(text("SET enable_seqscan = off"))
            plan = " ".join(row[0] for row in conn.execute(text("EXPLAIN " + query)))
        else:
            plan = " ".join(row[-1] for row in conn.execute(text("EXPLAIN QUERY PLAN " + query)))
    assert "ix_events_unscored" in plan
