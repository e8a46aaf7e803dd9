"""Hand-off webhooks against a real HTTP receiver on 127.0.0.1 (http.server in a thread):
signed so the receiver can verify them, retried with backoff while it is down, delivered
once when it is back, every attempt recorded; Slack-compatible messages too."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select
from support.funnel import (
    MONDAY,
    SECRET,
    add_lead,
    behave,
    make_runtime,
    tick_at,
    use_fixture_folder,
)

from nurture.db.models import WebhookAttempt, WebhookDelivery
from nurture.funnel.signing import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    verify,
)
from nurture.runtime import Runtime


class Receiver:
    """A webhook receiver: records requests, answers ``status`` (settable)."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.requests.append(({k: v for k, v in self.headers.items()}, body))
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/nurture"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


def runtime(db_url: str, monkeypatch: pytest.MonkeyPatch, **targets: str) -> Runtime:
    use_fixture_folder(monkeypatch)
    names = {"webhook": "NURTURE_HANDOFF_WEBHOOK_URLS", "slack": "NURTURE_HANDOFF_SLACK_URLS"}
    for kind, url in targets.items():
        monkeypatch.setenv(names[kind], url)
    overrides = {f"handoff_{k}_urls": v for k, v in targets.items()}
    return make_runtime(db_url, **overrides)


def demo_request(rt: Runtime, at: datetime = MONDAY) -> int:
    lead_id = add_lead(rt, "ana@acme.example", at, enrolled=False)
    behave(
        rt, lead_id, "pricing_page_view", at, url="https://acme.example/pricing", title="Pricing"
    )
    behave(rt, lead_id, "demo_requested", at + timedelta(minutes=1))
    return lead_id


def attempts(rt: Runtime) -> list[tuple[int, str, int | None]]:
    with rt.sessions() as session:
        rows = session.scalars(select(WebhookAttempt).order_by(WebhookAttempt.id))
        return [(a.attempt, a.status, a.response_code) for a in rows]


def test_receiver_verifies_the_signed_handoff(
    db_url: str, monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    rt = runtime(db_url, monkeypatch, webhook=receiver.url)
    lead_id = demo_request(rt)
    assert receiver.requests == []  # queued with the stage change, not sent inline
    sent_at = MONDAY + timedelta(minutes=2)
    tick_at(rt, sent_at)
    ((headers, body),) = receiver.requests
    assert verify(SECRET, body, headers, sent_at)
    # A changed body, another secret, or a replay an hour later: refused.
    assert not verify(SECRET, body.replace(b"ana@", b"eve@"), headers, sent_at)
    assert not verify("other-secret", body, headers, sent_at)
    assert not verify(SECRET, body, headers, sent_at + timedelta(hours=1))
    assert headers[EVENT_HEADER] == "handoff.fast_track" and headers[DELIVERY_HEADER] == "1"
    document = json.loads(body)
    assert document["event"] == "handoff.fast_track"
    assert document["lead"]["id"] == lead_id
    assert document["handoff"]["priority"] == "hot" and document["handoff"]["stage"] == "sql"
    assert "demo-request" in document["why"]["reason"]
    content = [(c["type"], c["title"]) for c in document["engaged_content"]]
    assert content == [("demo_requested", ""), ("pricing_page_view", "Pricing")]
    assert [(h["from"], h["to"]) for h in document["stage_history"]] == [("lead", "sql")]
    assert attempts(rt) == [(1, "delivered", 200)]
    tick_at(rt, sent_at + timedelta(hours=1))
    assert len(receiver.requests) == 1
    rt.close()


def test_receiver_down_then_up_gets_it_exactly_once(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hooks/nurture"
    rt = runtime(db_url, monkeypatch, webhook=url)
    demo_request(rt)
    start = MONDAY + timedelta(minutes=2)
    tick_at(rt, start)  # nobody listens: refused, retried in 1 minute
    tick_at(rt, start + timedelta(seconds=30))  # not due yet: no attempt
    tick_at(rt, start + timedelta(minutes=1))  # refused again, retried in 2 minutes
    late = Receiver(port)
    late.status = 503  # up, but failing
    try:
        tick_at(rt, start + timedelta(minutes=3))
        late.status = 200
        tick_at(rt, start + timedelta(minutes=4))  # backoff: 4 minutes after the 3rd try
        assert len(late.requests) == 1
        tick_at(rt, start + timedelta(minutes=7))
        tick_at(rt, start + timedelta(hours=2))
        assert len(late.requests) == 2
    finally:
        late.close()
    assert attempts(rt) == [
        (1, "retry", None),
        (2, "retry", None),
        (3, "retry", 503),
        (4, "delivered", 200),
    ]
    with rt.sessions() as session:
        (delivery,) = session.scalars(select(WebhookDelivery))
        errors = [a.error for a in session.scalars(select(WebhookAttempt))]
    assert delivery.status == "delivered" and delivery.attempts == 4
    assert delivery.delivered_at == start + timedelta(minutes=7)
    assert "Connection refused" in errors[0] or "URLError" in errors[0]
    rt.close()


def test_a_refused_request_is_not_retried_and_slack_gets_a_message(
    db_url: str, monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    slack = Receiver()
    try:
        receiver.status = 400
        rt = runtime(db_url, monkeypatch, webhook=receiver.url, slack=slack.url)
        demo_request(rt)
        tick_at(rt, MONDAY + timedelta(minutes=2))
        tick_at(rt, MONDAY + timedelta(hours=2))
        assert len(receiver.requests) == 1  # 400: the request itself is wrong
        ((_, body),) = slack.requests
        message = json.loads(body)
        assert message["text"] == "Hot SQL for sales: Alex (Acme)"
        assert message["blocks"][0]["type"] == "header"
        assert "demo-request" in message["blocks"][1]["text"]["text"]
        with rt.sessions() as session:
            rows = session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id))
            statuses = [(d.target_kind, d.status) for d in rows]
        assert statuses == [("webhook", "failed"), ("slack", "delivered")]
        rt.close()
    finally:
        slack.close()
