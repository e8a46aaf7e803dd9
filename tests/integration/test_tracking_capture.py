"""Group commit of opens and clicks: hits that arrive together share one transaction, each
is answered only after that commit, and one bad hit cannot fail the others."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select
from support.engine import MONDAY, add_lead, messages, tick_at
from support.web import BROWSER, web_runtime

from nurture.db.models import Event, Link
from nurture.delivery.transports import MemoryTransport
from nurture.runtime import Runtime
from nurture.tracking.bots import BotRules, Hit
from nurture.tracking.hits import HitOutcome, HitRequest, HitStore, record_hits
from nurture.web import capture
from nurture.web.capture import HitWriter

LATER = MONDAY + timedelta(hours=2)


@pytest.fixture
def rt(db_url: str) -> Iterator[Runtime]:
    """Two leads mailed step 1 at MONDAY; message 1 has three links."""
    runtime = web_runtime(db_url, MemoryTransport())
    add_lead(runtime, "a@example.com")
    add_lead(runtime, "b@example.com")
    tick_at(runtime, MONDAY)
    first = messages(runtime)[0].id
    with runtime.sessions() as session, session.begin():
        session.add_all(
            [Link(message_id=first, position=p, url=f"https://x.example/{p}") for p in (2, 3)]
        )
    yield runtime
    runtime.close()


def ids(rt: Runtime) -> list[int]:
    return [m.id for m in messages(rt)]


def hit(kind: str, message_id: int, position: int = 0, seconds: float = 0) -> HitRequest:
    at = LATER + timedelta(seconds=seconds)
    return HitRequest(kind, message_id, position, Hit(at, BROWSER, "203.0.113.5"))  # type: ignore[arg-type]


def stored(rt: Runtime) -> list[Event]:
    with rt.sessions() as session:
        query = select(Event).where(Event.type.in_(("opened", "clicked"))).order_by(Event.id)
        return list(session.scalars(query))


def test_a_batch_records_every_hit_and_reports_unknown_ones(rt: Runtime) -> None:
    first, second = ids(rt)
    requests = [
        hit("opened", first),
        hit("clicked", second, 1),
        hit("opened", 999_999),
        hit("clicked", second, 7),
        hit("clicked", first, 2, seconds=600),
    ]
    store = HitStore(rt.engine)
    with store.writing() as conn:
        outcomes = record_hits(conn, requests, BotRules.from_settings(rt.settings))
    assert [o.found for o in outcomes] == [True, True, False, False, True]
    assert outcomes[1].url.startswith("https://docs.example.com/guide?step=1&utm_source=")
    assert outcomes[4].url == "https://x.example/2"
    events = stored(rt)
    assert [e.id for e in events] == [outcomes[i].event_id for i in (0, 1, 4)]
    assert [(e.type, e.message_id, e.is_human) for e in events] == [
        ("opened", first, True),
        ("clicked", second, True),
        ("clicked", first, True),
    ]


def test_a_scanner_burst_inside_one_batch_is_caught(rt: Runtime) -> None:
    first = ids(rt)[0]
    store = HitStore(rt.engine)
    rules = BotRules.from_settings(rt.settings)
    with store.writing() as conn:  # one link clicked earlier, stored as human
        record_hits(conn, [hit("clicked", first, 1, seconds=0)], rules)
    burst = [hit("clicked", first, p, seconds=1) for p in (2, 3)]
    with store.writing() as conn:
        outcomes = record_hits(conn, burst, rules)
    assert outcomes[1].bot_reason.startswith("every link clicked")
    events = stored(rt)
    assert [e.is_human for e in events] == [False, False, False]
    assert all(e.data["bot_reason"].startswith("every link") for e in events)


def test_hits_arriving_together_share_a_commit(rt: Runtime) -> None:
    first, second = ids(rt)
    commits: list[int] = []
    event.listen(rt.engine, "commit", lambda conn: commits.append(1))
    writer = HitWriter(HitStore(rt.engine), BotRules.from_settings(rt.settings), lambda ids: None)
    futures = [
        writer.submit(hit("opened" if i % 2 else "clicked", (first, second)[i % 2], 1, i * 60))
        for i in range(200)
    ]
    outcomes = [f.result(timeout=30) for f in futures]
    writer.close()
    assert all(o.found and o.event_id for o in outcomes)
    assert len(stored(rt)) == 200 == len({o.event_id for o in outcomes})
    assert len(commits) < 200  # grouped


def test_a_failing_batch_is_retried_hit_by_hit(rt: Runtime, monkeypatch: Any) -> None:
    first = ids(rt)[0]
    real = capture.record_hits
    batch_sizes: list[int] = []

    def flaky(conn: Any, requests: list[HitRequest], rules: BotRules) -> Any:
        batch_sizes.append(len(requests))
        if len(requests) > 1 or requests[0].message_id == -1:
            raise RuntimeError("database hiccup")
        return real(conn, requests, rules)

    monkeypatch.setattr(capture, "record_hits", flaky)
    handed_on: list[int] = []
    writer = HitWriter(HitStore(rt.engine), BotRules.from_settings(rt.settings), handed_on.extend)
    # Queued before the thread starts, so they form one batch.
    futures: list[Future[HitOutcome]] = []
    for request in [*(hit("opened", first, 0, i) for i in range(3)), hit("opened", -1)]:
        futures.append(Future())
        writer._queue.put((request, futures[-1]))
    writer.close()  # no thread yet: nothing happens
    writer._ensure_started()
    results = [f.result(timeout=30) for f in futures[:3]]
    with pytest.raises(RuntimeError, match="hiccup"):
        futures[3].result(timeout=30)
    writer.close()
    assert batch_sizes[0] == 4 and batch_sizes[1:] == [1, 1, 1, 1]
    assert len(stored(rt)) == 3 and sorted(handed_on) == sorted(r.event_id for r in results)
