"""Where stored events go: scored inline or in the background in the embedded mode, queued
for the workers (task ``nurture.events.process`` on the ``events`` queue) with a broker,
and caught up by ``process_unscored`` when their processing was lost."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from support.engine import MONDAY, add_lead, tick_at
from support.web import AUTH, BROWSER, Clock, client_for, links_of, web_runtime

from nurture.db.models import Event
from nurture.delivery.transports import MemoryTransport
from nurture.jobs.events import process_unscored
from nurture.queues import Queues
from nurture.settings import Settings

VISIT = {
    "email": "sam@example.com",
    "type": "pricing_page_view",
    "occurred_at": "2026-03-02T08:00Z",
}


def scored(rt: object) -> dict[str, bool]:
    with rt.sessions() as session:  # type: ignore[attr-defined]
        events = session.scalars(select(Event).where(Event.type != "sent"))
        return {e.type: e.scored_at is not None for e in events}


def test_embedded_mode_scores_api_events_inline_and_hits_in_the_background(db_url: str) -> None:
    transport = MemoryTransport()
    rt = web_runtime(db_url, transport)
    add_lead(rt, "alex@example.com")
    tick_at(rt, MONDAY)
    with client_for(rt, Clock(MONDAY + timedelta(hours=1))) as client:
        assert client.post("/api/v1/events", json=VISIT, headers=AUTH).status_code == 201
        assert scored(rt) == {"pricing_page_view": True}  # before the answer
        links = links_of(transport.messages[0])
        client.get(links.pixel, headers={"User-Agent": BROWSER})
        client.get(links.clicks[0], headers={"User-Agent": BROWSER})
    # Leaving the client stops the app: the background thread finished its batch.
    assert scored(rt) == {"pricing_page_view": True, "opened": True, "clicked": True}
    rt.close()


def queued(redis_url: str) -> list[tuple[str, list[int]]]:
    import redis

    client = redis.Redis.from_url(redis_url)
    found = []
    for raw in client.lrange("events", 0, -1):
        message = json.loads(raw)
        args, _, _ = json.loads(base64.b64decode(message["body"]))
        found.append((message["headers"]["task"], args[0]))
    client.delete("events")
    return found


@pytest.mark.redis
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_with_a_broker_events_are_queued_for_the_workers(db_url: str, redis_url: str) -> None:
    import redis

    # A database of our own: the worker end-to-end test flushes the shared one.
    redis_url = redis_url.rsplit("/", 1)[0] + "/13"
    redis.Redis.from_url(redis_url).delete("events")
    Queues(Settings(broker_url=redis_url)).events([3, 5])
    assert queued(redis_url) == [("nurture.events.process", [3, 5])]
    transport = MemoryTransport()
    rt = web_runtime(db_url, transport, broker_url=redis_url)
    add_lead(rt, "alex@example.com")
    tick_at(rt, MONDAY)
    with client_for(rt, Clock(MONDAY + timedelta(hours=1))) as client:
        created = client.post("/api/v1/events", json=VISIT, headers=AUTH).json()
        client.get(links_of(transport.messages[0]).pixel, headers={"User-Agent": BROWSER})
    tasks = queued(redis_url)
    assert [task for task, _ in tasks] == ["nurture.events.process"] * 2
    ids = sorted(i for _, batch in tasks for i in batch)
    assert created["event_id"] in ids and len(ids) == 2
    assert not any(scored(rt).values())  # the workers score them, not the web process
    assert process_unscored(rt, MONDAY + timedelta(hours=2)) == 2
    assert all(scored(rt).values())
    rt.close()


def test_process_unscored_catches_up_lost_processing(db_url: str) -> None:
    rt = web_runtime(db_url, MemoryTransport())
    with client_for(rt, Clock()) as client:
        for key in ("a", "b", "c"):
            body = {**VISIT, "dedupe_key": key}
            assert client.post("/api/v1/events", json=body, headers=AUTH).status_code == 201
    with rt.sessions() as session, session.begin():
        session.execute(update(Event).values(scored_at=None))  # as if the scoring was lost
    assert process_unscored(rt, MONDAY, limit=2) == 2
    assert process_unscored(rt, MONDAY) == 1
    assert process_unscored(rt, MONDAY) == 0
    rt.close()
