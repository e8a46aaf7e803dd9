"""Shared pieces of the web tests: a runtime with the fixture sequences and an in-memory
transport, a settable clock, the test client, and the links of a sent message."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from nurture.db.models import Base
from nurture.delivery.transports import MemoryTransport
from nurture.runtime import Runtime
from nurture.web.app import create_app
from support.engine import MONDAY, make_runtime

API_KEY = "test-key-0123456789"
OTHER_KEY = "second-key-abcdef"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Safari/605.1.15"


@dataclass
class Clock:
    """The web app's clock, moved by the test."""

    now: datetime = MONDAY

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@dataclass
class Web:
    """A runtime, its transport, the app's clock and a client (no redirects followed)."""

    rt: Runtime
    transport: MemoryTransport
    clock: Clock
    client: TestClient
    extra: dict[str, Any] = field(default_factory=dict)


def web_runtime(db_url: str, transport: MemoryTransport, **overrides: Any) -> Runtime:
    values = {"api_keys": f"{API_KEY},{OTHER_KEY}", **overrides}
    return make_runtime(db_url, transport, **values)


def client_for(rt: Runtime, clock: Clock) -> TestClient:
    return TestClient(create_app(rt, clock=clock), follow_redirects=False)


@dataclass(frozen=True)
class SentLinks:
    """The tracking URLs (paths only) found in a sent message."""

    clicks: list[str]
    text_clicks: list[str]
    pixel: str
    unsubscribe: str
    html: str


def links_of(message: EmailMessage) -> SentLinks:
    html_part = message.get_body(("html",))
    text_part = message.get_body(("plain",))
    assert html_part is not None and text_part is not None
    html = str(html_part.get_content())
    text = str(text_part.get_content())
    clicks = re.findall(r'href="(https://nurture\.example/c/[^"]+)"', html)
    text_clicks = re.findall(r"https://nurture\.example/c/\S+", text)
    pixel = re.findall(r'src="(https://nurture\.example/o/[^"]+)"', html)
    unsubscribe = re.findall(r"<(https://[^>]+)>", str(message["List-Unsubscribe"]))
    assert pixel and unsubscribe, "the message has no pixel or no List-Unsubscribe URL"
    return SentLinks(
        [path(u) for u in clicks], [path(u) for u in text_clicks], path(pixel[0]),
        path(unsubscribe[0]), html,
    )  # fmt: skip


def path(url: str) -> str:
    return urlsplit(url).path


def count(rt: Runtime, model: type[Base], **where: Any) -> int:
    with rt.sessions() as session:
        query = select(func.count()).select_from(model).filter_by(**where)
        return int(session.scalar(query) or 0)
