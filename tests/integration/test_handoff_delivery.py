"""Hand-off delivery safety: never unsigned, each POST signed when it is sent, Slack text
escaped, a bounded pass that runs after the sends (and as its own Celery task)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from support.funnel import MONDAY, SECRET, add_lead, behave, make_runtime, use_fixture_folder

from nurture.db.models import WebhookAttempt, WebhookDelivery
from nurture.db.session import transaction
from nurture.delivery.transports import MemoryTransport
from nurture.funnel import webhooks
from nurture.funnel.notifications import NO_SECRET, slack_message
from nurture.funnel.signing import TIMESTAMP_HEADER, signed_headers, verify
from nurture.funnel.webhooks import deliver_due
from nurture.jobs import tick as ticks_module
from nurture.jobs.tick import dispatch_due
from nurture.queues import DEFAULT_QUEUE
from nurture.runtime import Runtime

Posted = list[tuple[str, dict[str, str], bytes]]


def recorder(posted: Posted, answer: int = 200, pause: float = 0.0) -> webhooks.Poster:
    def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Any:
        posted.append((url, headers, body))
        if pause:
            time.sleep(pause)
        return answer, ""

    return post


def queue(rt: Runtime, count: int, kind: str = "webhook", at: datetime = MONDAY) -> None:
    """``count`` due deliveries, written straight to the outbox."""
    with transaction(rt.sessions) as session:
        session.add_all(
            WebhookDelivery(
                handoff_id=None,
                lead_id=None,
                event="handoff.mql",
                target_kind=kind,
                target_url=f"https://crm.example/hook/{n}",
                payload={"event": "handoff.mql", "n": n},
                status="pending",
                attempts=0,
                next_attempt_at=at,
                last_error="",
                created_at=at,
            )
            for n in range(count)
        )


def statuses(rt: Runtime) -> list[tuple[str, str, int]]:
    with rt.sessions() as session:
        rows = session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id))
        return [(d.target_kind, d.status, d.attempts) for d in rows]


@pytest.fixture
def rt(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    use_fixture_folder(monkeypatch)
    return make_runtime(db_url)


def test_without_a_secret_webhooks_fail_and_nothing_is_sent(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_fixture_folder(monkeypatch)
    monkeypatch.setenv("NURTURE_WEBHOOK_SECRET", "")
    rt = make_runtime(db_url, webhook_secret="")
    queue(rt, 1)
    queue(rt, 1, kind="slack")
    posted: Posted = []
    report = deliver_due(rt.sessions, rt.settings, MONDAY, max_attempts=8, post=recorder(posted))
    assert [url for url, _, _ in posted] == ["https://crm.example/hook/0"]  # the Slack one
    assert statuses(rt) == [("webhook", "failed", 1), ("slack", "delivered", 1)]
    assert report.failed == 1 and NO_SECRET in report.errors[0]
    with rt.sessions() as session:
        first = session.scalars(select(WebhookAttempt).order_by(WebhookAttempt.id)).first()
    assert first is not None and first.error == NO_SECRET and first.response_code is None
    rt.close()


def test_each_post_is_signed_when_it_is_sent(rt: Runtime) -> None:
    queue(rt, 3)
    readings = iter(MONDAY + timedelta(seconds=400 * n) for n in range(3))
    clock: Callable[[], datetime] = lambda: next(readings)  # noqa: E731
    posted: Posted = []
    deliver_due(
        rt.sessions, rt.settings, MONDAY, max_attempts=8, post=recorder(posted), clock=clock
    )
    stamps = [int(headers[TIMESTAMP_HEADER]) for _, headers, _ in posted]
    start = int(MONDAY.timestamp())
    assert stamps == [start, start + 400, start + 800]
    # The last one, sent 800 s into the pass, is fresh when it arrives.
    _, headers, body = posted[-1]
    arrival = MONDAY + timedelta(seconds=801)
    assert verify(SECRET, body, headers, arrival)
    rt.close()


def test_slack_text_from_the_lead_is_escaped() -> None:
    document = {
        "lead": {"first_name": "<!channel>", "last_name": "Kim", "company": "R&D <Labs>"},
        "handoff": {"stage": "mql", "priority": "normal", "due_at": "2026-03-03T10:00:00"},
        "why": {"reason": "MQL rule engaged: score 60 >= 60"},
        "engaged_content": [{"type": "page_visit", "title": "<@U123> hi", "url": ""}],
    }
    message = slack_message("handoff.mql", document)
    assert message["text"] == "MQL for sales: &lt;!channel&gt; Kim (R&amp;D &lt;Labs&gt;)"
    text = message["blocks"][1]["text"]["text"]
    assert "&lt;@U123&gt; hi" in text and "<" not in text.replace("&lt;", "")
    assert "score 60 &gt;= 60" in text


def test_a_pass_delivers_at_most_twenty(rt: Runtime) -> None:
    queue(rt, 25)
    posted: Posted = []
    report = deliver_due(rt.sessions, rt.settings, MONDAY, max_attempts=8, post=recorder(posted))
    assert report.delivered == 20 and len(posted) == 20
    assert statuses(rt).count(("webhook", "pending", 0)) == 5
    deliver_due(rt.sessions, rt.settings, MONDAY, max_attempts=8, post=recorder(posted))
    assert len(posted) == 25
    rt.close()


def test_a_pass_stops_starting_posts_after_its_time_budget(rt: Runtime) -> None:
    queue(rt, 5)
    posted: Posted = []
    slow = recorder(posted, pause=0.2)
    deliver_due(rt.sessions, rt.settings, MONDAY, max_attempts=8, post=slow, budget_seconds=0.3)
    assert len(posted) == 2  # started at 0 s and 0.2 s; not at 0.4 s
    found = statuses(rt)
    assert found[:2] == [("webhook", "delivered", 1)] * 2
    assert found[2:] == [("webhook", "pending", 0)] * 3  # released untried, due now
    rt.close()


def test_the_tick_sends_mail_before_it_posts_webhooks(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_fixture_folder(monkeypatch)
    monkeypatch.setenv("NURTURE_HANDOFF_WEBHOOK_URLS", "https://crm.example/hook")
    memory = MemoryTransport()
    rt = make_runtime(db_url, memory, handoff_webhook_urls="https://crm.example/hook")
    add_lead(rt, "mail@acme.example")  # its welcome mail is due now
    hot = add_lead(rt, "hot@acme.example", enrolled=False)
    behave(rt, hot, "demo_requested", MONDAY)  # a fast track: a webhook is due now
    mail_when_posted: list[int] = []

    def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Any:
        mail_when_posted.append(len(memory.sent))
        return 200, ""

    monkeypatch.setattr(webhooks, "http_post", post)
    ticks_module.tick(rt, MONDAY + timedelta(minutes=1))
    assert mail_when_posted == [1]
    rt.close()


def test_the_distributed_tick_leaves_webhooks_to_their_own_task(rt: Runtime) -> None:
    queue(rt, 1)
    dispatch_due(rt, MONDAY, lambda claims: None)
    assert statuses(rt) == [("webhook", "pending", 0)]
    rt.close()


def test_the_celery_tick_dispatches_the_delivery_task(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nurture import worker

    queued: list[str] = []
    monkeypatch.setattr(worker, "runtime", lambda: rt)
    monkeypatch.setattr(worker, "dispatch_due", lambda *args: 0)
    monkeypatch.setattr(worker.deliver_handoffs_task, "delay", lambda: queued.append("deliver"))
    worker.tick_task()
    assert queued == ["deliver"]
    route = worker.app.amqp.router.route({}, "nurture.handoffs.deliver")
    assert route["queue"].name == DEFAULT_QUEUE
    queue(rt, 1)
    posted: Posted = []
    monkeypatch.setattr(webhooks, "http_post", recorder(posted))
    assert worker.deliver_handoffs_task() == 1 and len(posted) == 1
    rt.close()


def test_verify_checks_against_the_current_time_by_default() -> None:
    body = b'{"event":"handoff.mql"}'
    fresh = signed_headers(SECRET, body, datetime.now(UTC), delivery="1", event="handoff.mql")
    assert verify(SECRET, body, fresh)
    ago = datetime.now(UTC) - timedelta(minutes=10)
    old = signed_headers(SECRET, body, ago, delivery="1", event="handoff.mql")
    assert not verify(SECRET, body, old)
