"""The tracking endpoints against a real engine run: the engine sends step 1 through the
in-memory transport, and the test follows the links found in that email."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from support.engine import MONDAY, add_lead, enrollment, messages, tick_at
from support.web import (
    BROWSER,
    Clock,
    SentLinks,
    Web,
    client_for,
    count,
    links_of,
    path,
    web_runtime,
)
from typer.testing import CliRunner

from nurture.cli import app
from nurture.db.models import Enrollment, Event, Link, Message, Suppression
from nurture.delivery.transports import MemoryTransport
from nurture.tracking.tokens import click_url, open_url, sign, unsubscribe_url

SECRET = "test-secret-key"
BASE = "https://nurture.example"


@pytest.fixture
def web(db_url: str) -> Iterator[Web]:
    transport = MemoryTransport()
    rt = web_runtime(db_url, transport)
    add_lead(rt, "alex@example.com")
    tick_at(rt, MONDAY)  # sends step 1 (welcome) at MONDAY
    assert len(transport.sent) == 1
    clock = Clock(MONDAY + timedelta(hours=1))
    with client_for(rt, clock) as client:
        yield Web(rt, transport, clock, client)
    rt.close()


def sent(web: Web) -> SentLinks:
    return links_of(web.transport.messages[0])


def events(web: Web, event_type: str) -> list[Event]:
    with web.rt.sessions() as session:
        query = select(Event).where(Event.type == event_type).order_by(Event.id)
        return list(session.scalars(query))


def message_id(web: Web) -> int:
    return messages(web.rt)[0].id


def test_sent_mail_links_are_tracked_and_stored_with_utm(web: Web) -> None:
    links = sent(web)
    assert len(links.clicks) == 1 and links.text_clicks == links.clicks
    assert "docs.example.com" not in links.html
    with web.rt.sessions() as session:
        stored = session.scalars(select(Link).where(Link.message_id == message_id(web))).all()
    assert [(link.position, link.url) for link in stored] == [
        (
            1,
            "https://docs.example.com/guide?step=1&utm_source=nurture&utm_medium=email"
            "&utm_campaign=drip&utm_content=welcome",
        )
    ]


def test_open_pixel_answers_a_gif_and_records_a_human_open(web: Web) -> None:
    response = web.client.get(sent(web).pixel, headers={"User-Agent": BROWSER})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/gif"
    assert response.content.startswith(b"GIF89a") and len(response.content) == 43
    assert "no-store" in response.headers["cache-control"]
    [opened] = events(web, "opened")
    assert opened.is_human and opened.message_id == message_id(web)
    assert opened.occurred_at == web.clock.now


def test_click_redirects_to_the_stored_url_and_records_a_click(web: Web) -> None:
    response = web.client.get(sent(web).clicks[0], headers={"User-Agent": BROWSER})
    assert response.status_code == 302
    assert response.headers["location"].startswith("https://docs.example.com/guide?step=1&utm_")
    assert "set-cookie" not in response.headers
    [clicked] = events(web, "clicked")
    assert clicked.is_human and clicked.data["position"] == 1
    assert clicked.data["url"] == response.headers["location"]


def _tampered(token_path: str) -> list[str]:
    """The path with one character of its token changed, in several places."""
    head, token = token_path.rsplit("/", 1)
    suffix = ".gif" if token.endswith(".gif") else ""
    token = token.removesuffix(".gif")
    variants = []
    for i in (0, len(token) // 2, len(token) - 1):
        swapped = "A" if token[i] != "A" else "B"
        variants.append(f"{head}/{token[:i]}{swapped}{token[i + 1 :]}{suffix}")
    variants += [f"{head}/{token[:-3]}{suffix}", f"{head}/x{suffix}"]
    return variants


def test_tampered_tokens_get_404_and_write_nothing(web: Web) -> None:
    links = sent(web)
    before = count(web.rt, Event)
    for url in [*_tampered(links.pixel), *_tampered(links.clicks[0])]:
        assert web.client.get(url).status_code == 404, url
    for url in _tampered(links.unsubscribe):
        assert web.client.get(url).status_code == 404, url
        assert web.client.post(url, data={"List-Unsubscribe": "One-Click"}).status_code == 404
    assert count(web.rt, Event) == before
    assert count(web.rt, Suppression) == 0


def test_a_token_for_another_purpose_gets_404(web: Web) -> None:
    links = sent(web)
    open_token = links.pixel.removeprefix("/o/").removesuffix(".gif")
    click_token = links.clicks[0].removeprefix("/c/")
    unsubscribe_token = links.unsubscribe.removeprefix("/u/")
    before = count(web.rt, Event)
    assert web.client.get(f"/c/{open_token}").status_code == 404
    assert web.client.get(f"/c/{unsubscribe_token}").status_code == 404
    assert web.client.get(f"/o/{click_token}.gif").status_code == 404
    assert web.client.get(f"/o/{unsubscribe_token}.gif").status_code == 404
    assert web.client.post(f"/u/{open_token}").status_code == 404
    assert web.client.post(f"/u/{click_token}").status_code == 404
    # Signed with another key: worthless.
    assert (
        web.client.get(path(click_url(BASE, "other-secret", message_id(web), 1))).status_code == 404
    )
    assert count(web.rt, Event) == before and count(web.rt, Suppression) == 0


def test_a_genuine_token_for_an_unknown_message_or_link_gets_404(web: Web) -> None:
    before = count(web.rt, Event)
    assert web.client.get(path(open_url(BASE, SECRET, 999_999))).status_code == 404
    assert web.client.get(path(click_url(BASE, SECRET, 999_999, 1))).status_code == 404
    assert web.client.get(path(click_url(BASE, SECRET, message_id(web), 2))).status_code == 404
    assert web.client.post(path(unsubscribe_url(BASE, SECRET, 999_999))).status_code == 404
    # Signed, but not the payload the endpoints make.
    for payload in ("1", {"m": "1"}, {"m": True}, {"m": message_id(web)}, [1, 1]):
        assert web.client.get(f"/c/{sign(SECRET, 'click', payload)}").status_code == 404
    assert count(web.rt, Event) == before and count(web.rt, Suppression) == 0


def test_the_click_redirect_is_no_open_redirect(web: Web) -> None:
    click = sent(web).clicks[0]
    stored = web.client.get(click).headers["location"]
    assert stored.startswith("https://docs.example.com/")
    attempts = [
        f"{click}?url=https://evil.example/",
        f"{click}?url=https%3A%2F%2Fevil.example%2F&next=//evil.example",
        f"{click}?redirect=https://evil.example",
    ]
    for url in attempts:
        response = web.client.get(url)
        assert response.status_code == 302 and response.headers["location"] == stored, url
    for url in (
        "/c/%2F%2Fevil.example",
        "/c/https%3A%2F%2Fevil.example",
        f"{click}%2F%2Fevil.example",
        f"{click}.evil.example",
        "/c/evil.example",
    ):
        response = web.client.get(url)
        assert response.status_code == 404, url
        assert "location" not in response.headers


def test_the_redirect_never_leaves_for_a_non_http_url(web: Web) -> None:
    # Even a stored link is only followed when it is http(s): defense in depth.
    with web.rt.sessions() as session, session.begin():
        session.add(Link(message_id=message_id(web), position=2, url="javascript:alert(1)"))
    response = web.client.get(path(click_url(BASE, SECRET, message_id(web), 2)))
    assert response.status_code == 404 and "location" not in response.headers


def test_one_click_unsubscribe_then_a_tick_sends_nothing(web: Web) -> None:
    links = sent(web)
    page = web.client.get(links.unsubscribe)
    assert page.status_code == 200 and 'method="post"' in page.text
    assert "a***@example.com" in page.text
    assert count(web.rt, Suppression) == 0  # a GET (a link scanner) changes nothing
    response = web.client.post(
        links.unsubscribe,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert "set-cookie" not in response.headers and "location" not in response.headers
    assert "unsubscribed" in response.text
    with web.rt.sessions() as session:
        suppression = session.scalars(select(Suppression)).one()
    assert (suppression.email, suppression.reason) == ("alex@example.com", "unsubscribed")
    # Idempotent: the confirm form posting again changes nothing.
    again = web.client.post(links.unsubscribe, data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200
    assert count(web.rt, Suppression) == 1 and len(events(web, "unsubscribed")) == 1
    # The follow-up is due three days later: the tick sends nothing.
    report = tick_at(web.rt, MONDAY + timedelta(days=4))
    assert report.total_sent == 0 and len(web.transport.sent) == 1
    lead_id = messages(web.rt)[0].lead_id
    assert enrollment(web.rt, lead_id).status == "exited"


def test_unsubscribe_exits_the_active_enrollment_at_once(
    web: Web, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lead_id = messages(web.rt)[0].lead_id
    assert enrollment(web.rt, lead_id).status == "active"

    response = web.client.post(sent(web).unsubscribe, data={"List-Unsubscribe": "One-Click"})

    assert response.status_code == 200
    exited = enrollment(web.rt, lead_id)  # no tick in between
    assert (exited.status, exited.exit_reason) == ("exited", "suppressed: unsubscribed")
    assert exited.exited_at == web.clock.now and exited.next_run_at is None
    assert exited.claim_token is None and exited.claimed_until is None
    monkeypatch.setenv("NURTURE_DATABASE_URL", db_url)
    listed = json.loads(CliRunner().invoke(app, ["leads", "list", "--json"]).output)
    assert [(row["email"], row["sequence"]) for row in listed["leads"]] == [
        ("alex@example.com", None)
    ]


def test_unsubscribe_leaves_an_enrollment_mid_send_to_the_engine(web: Web) -> None:
    lead_id = messages(web.rt)[0].lead_id
    claimed_until = web.clock.now + timedelta(minutes=5)
    with web.rt.sessions() as session, session.begin():
        session.execute(
            update(Enrollment)
            .where(Enrollment.lead_id == lead_id)
            .values(claim_token="worker-1", claimed_until=claimed_until)
        )

    assert web.client.post(sent(web).unsubscribe).status_code == 200

    claimed = enrollment(web.rt, lead_id)
    assert (claimed.status, claimed.claim_token) == ("active", "worker-1")
    # Once the worker's lease is over, the engine's next decision exits it.
    assert tick_at(web.rt, MONDAY + timedelta(days=4)).total_sent == 0
    exited = enrollment(web.rt, lead_id)
    assert (exited.status, exited.exit_reason) == ("exited", "suppressed: unsubscribed")


def test_a_scanner_click_is_recorded_as_not_human(web: Web) -> None:
    click = sent(web).clicks[0]
    response = web.client.get(click, headers={"User-Agent": "Mimecast URL Protect/2.0"})
    assert response.status_code == 302  # the scanner still gets where the link goes
    [clicked] = events(web, "clicked")
    assert not clicked.is_human and clicked.data["bot_reason"] == "scanner user agent"


def test_a_click_seconds_after_the_send_is_not_human(web: Web) -> None:
    web.clock.now = MONDAY + timedelta(seconds=2)
    web.client.get(sent(web).clicks[0], headers={"User-Agent": BROWSER})
    [clicked] = events(web, "clicked")
    assert not clicked.is_human and clicked.data["bot_reason"].startswith("clicked within 5s")


def test_every_link_clicked_at_once_marks_all_those_clicks_not_human(web: Web) -> None:
    mid = message_id(web)
    with web.rt.sessions() as session, session.begin():
        session.add_all(
            [Link(message_id=mid, position=p, url=f"https://example.com/{p}") for p in (2, 3)]
        )
    for position in (1, 2, 3):
        web.clock.advance(seconds=1)
        response = web.client.get(path(click_url(BASE, SECRET, mid, position)))
        assert response.status_code == 302
    clicks = events(web, "clicked")
    assert [c.is_human for c in clicks] == [False, False, False]
    assert all(c.data["bot_reason"].startswith("every link clicked") for c in clicks)
    # A reader clicking one link again an hour later is a person.
    web.clock.advance(hours=1)
    web.client.get(path(click_url(BASE, SECRET, mid, 1)), headers={"User-Agent": BROWSER})
    assert events(web, "clicked")[-1].is_human


def test_a_privacy_proxy_open_is_not_human(web: Web) -> None:
    pixel = sent(web).pixel
    web.client.get(
        pixel, headers={"User-Agent": "Mozilla/5.0 YahooMailProxy; https://help.yahoo.com"}
    )
    apple = client_for(web.rt, web.clock)
    apple_client = type(apple)(apple.app, client=("17.58.63.10", 443), follow_redirects=False)
    assert apple_client.get(pixel, headers={"User-Agent": "Mozilla/5.0"}).status_code == 200
    web.clock.now = MONDAY + timedelta(seconds=1)
    web.client.get(pixel, headers={"User-Agent": BROWSER})
    reasons = [(e.is_human, e.data.get("bot_reason", "")) for e in events(web, "opened")]
    assert reasons[0] == (False, "privacy proxy")
    assert reasons[1] == (False, "privacy proxy")
    assert reasons[2][0] is False and reasons[2][1].startswith("opened within")


def test_hits_are_stored_before_the_answer_and_count_once_each(web: Web) -> None:
    links = sent(web)
    for _ in range(3):
        assert web.client.get(links.pixel, headers={"User-Agent": BROWSER}).status_code == 200
        assert web.client.get(links.clicks[0], headers={"User-Agent": BROWSER}).status_code == 302
    assert len(events(web, "opened")) == 3 and len(events(web, "clicked")) == 3
    with web.rt.sessions() as session:
        message = session.get(Message, message_id(web))
        assert message is not None and message.status == "sent"
