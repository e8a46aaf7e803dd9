"""Replaying a click: a captured tracking link requested a thousand times used to take a
lead from 33 points to MQL and beyond (4,048). Now a human click of a link, or open of a
message, scores once within the repeat window, and the tracking endpoints record at most
a few hits per token (answering every request as usual)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select
from support import SHIPPED, use_scoring
from support.engine import MONDAY, add_lead, tick_at
from support.web import BROWSER, Clock, Web, client_for, links_of, web_runtime

from nurture.db.models import Event, ScoreEntry
from nurture.delivery.transports import MemoryTransport
from nurture.scoring.loading import load_rules
from nurture.scoring.scores import lead_score

REPLAYS = 1000


@pytest.fixture
def web(db_url: str) -> Iterator[Web]:
    """A lead mailed at MONDAY; the client is opened by ``requests`` (hits are scored on
    the app's background thread, done when the client closes)."""
    transport = MemoryTransport()
    rt = web_runtime(db_url, transport)
    use_scoring(rt, SHIPPED / "scoring.yaml")
    add_lead(rt, "alex@example.com")
    tick_at(rt, MONDAY)
    clock = Clock(MONDAY + timedelta(hours=1))
    yield Web(rt, transport, clock, client_for(rt, clock))
    rt.close()


def clicks(web: Web) -> list[Event]:
    with web.rt.sessions() as session:
        return list(session.scalars(select(Event).where(Event.type == "clicked")))


def score(web: Web) -> float:
    with web.rt.sessions() as session:
        return lead_score(session, 1, web.clock.now, rules=web.rt.program.scoring).total


def test_a_replayed_click_scores_once_and_is_recorded_a_bounded_number_of_times(
    web: Web,
) -> None:
    link = links_of(web.transport.messages[0]).clicks[0]
    before = score(web)
    headers = {"User-Agent": BROWSER}
    with web.client as client:
        for _ in range(REPLAYS):
            web.clock.advance(seconds=0.5)  # all within one 10-minute window of the limits
            response = client.get(link, headers=headers)
            assert response.status_code == 302  # every request is answered as usual
    limit = web.rt.settings.track_limit_per_token
    assert len(clicks(web)) == limit  # the rest recorded nowhere
    with web.rt.sessions() as session:
        entries = list(session.scalars(select(ScoreEntry).where(ScoreEntry.rule == "email_click")))
    assert [e.points for e in entries].count(3.0) == 1  # one click of this link counted
    assert all(e.points == 0 for e in entries[1:])
    assert "repeat (click of this link counted within 30d)" in entries[1].detail
    assert score(web) == pytest.approx(before + 3, abs=0.05)


def test_after_the_repeat_window_the_same_link_counts_again(web: Web) -> None:
    link = links_of(web.transport.messages[0]).clicks[0]
    headers = {"User-Agent": BROWSER}
    with web.client as client:
        web.clock.advance(minutes=5)
        client.get(link, headers=headers)
        web.clock.advance(days=31)
        client.get(link, headers=headers)
    with web.rt.sessions() as session:
        points = list(
            session.scalars(select(ScoreEntry.points).where(ScoreEntry.rule == "email_click"))
        )
    assert points == [3.0, 3.0]


def test_the_address_limit_covers_many_tokens_from_one_client(db_url: str) -> None:
    transport = MemoryTransport()
    rt = web_runtime(db_url, transport, track_limit_per_address=3)
    for n in range(5):
        add_lead(rt, f"lead{n}@example.com")
    tick_at(rt, MONDAY)
    pixels = [links_of(m).pixel for m in transport.messages]
    with client_for(rt, Clock(MONDAY + timedelta(hours=1))) as client:
        answers = [client.get(p, headers={"User-Agent": BROWSER}) for p in pixels]
    assert [a.status_code for a in answers] == [200] * 5
    assert all(a.headers["content-type"] == "image/gif" for a in answers)
    with rt.sessions() as session:
        assert len(session.scalars(select(Event).where(Event.type == "opened")).all()) == 3
    rt.close()


def test_every_shipped_engagement_rule_has_a_cap() -> None:
    rules = load_rules(SHIPPED / "scoring.yaml")
    assert rules.event_rules
    uncapped = [r.name for r in rules.event_rules if r.category == "engagement" and not r.cap_count]
    assert uncapped == []
