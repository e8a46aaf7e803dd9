"""Only a template's own links become signed click redirects: a URL in lead data (a first
name of ``https://evil.example/login``) is sent as plain text, never as ``/c/<token>``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from support.engine import BASE_URL, MONDAY, SECRET, TEMPLATES, add_lead, make_runtime, tick_at

from nurture.authoring.templates import TemplateRenderer
from nurture.db.models import Link
from nurture.delivery.compose import PendingSend, compose_email
from nurture.delivery.transports import MemoryTransport
from nurture.runtime import Runtime
from nurture.sequences.engine import SendEmail
from nurture.settings import Settings
from nurture.tracking.links import Tracking, template_urls, track
from nurture.tracking.tokens import link_of

EVIL = "https://evil.example/login"
EVIL_CO = "http://phish.example/acme?x=1"
GUIDE = "https://docs.example.com/guide?step=1"
CLICK = re.compile(rf"{re.escape(BASE_URL)}/c/[\w.-]+")


def _tracking(allowed: set[str] | None) -> Tracking:
    return Tracking(
        click_url=lambda position: f"{BASE_URL}/c/link{position}",
        pixel_url=None,
        utm={"utm_source": "nurture"},
        base_url=BASE_URL,
        allowed=allowed,
    )


def test_only_allowed_urls_are_rewritten() -> None:
    html = f'<p>Hi {EVIL}</p><a href="{EVIL}">x</a><a href="{GUIDE}">guide</a>'
    text = f"Hi {EVIL},\nGuide: {GUIDE}."
    body = track(html, text, _tracking({GUIDE}))
    assert f"Hi {EVIL}," in body.text and f"Guide: {BASE_URL}/c/link1." in body.text
    assert f'href="{EVIL}"' in body.html and f'href="{BASE_URL}/c/link1"' in body.html
    assert [link.url for link in body.links] == [f"{GUIDE}&utm_source=nurture"]


def test_template_urls_of_literal_text() -> None:
    literal = f'Read ({GUIDE}). <a href="https://a.example/?p=1&amp;q=2">a</a>'
    urls = template_urls(literal)
    assert GUIDE in urls and f"{GUIDE})." in urls
    assert "https://a.example/?p=1&q=2" in urls  # as the href is compared: unescaped
    assert not template_urls("no links here, {{ lead.company }}")


def test_renderer_collects_layout_links_but_not_expression_urls(tmp_path: Path) -> None:
    (tmp_path / "_layouts").mkdir()
    (tmp_path / "_layouts" / "base.html").write_text(
        '<a href="https://corp.example/privacy">p</a>{% block body %}{% endblock %}'
    )
    (tmp_path / "mail.html").write_text(
        '{% extends "_layouts/base.html" %}{% block body %}'
        '<a href="https://x.example/{{ lead.company }}">c</a>'
        '{% set home = "https://corp.example/" %}<a href="{{ home }}">home</a>'
        "{% endblock %}"
    )
    renderer = TemplateRenderer(tmp_path)
    urls = renderer.literal_urls("mail.html")
    assert {"https://corp.example/privacy", "https://corp.example/"} <= urls
    assert "https://x.example/Acme" not in urls  # what the expression renders to
    assert renderer.literal_urls("mail.html") is urls  # computed once


def _pending(lead: dict[str, object]) -> PendingSend:
    decision = SendEmail("welcome", "drip/welcome", "Hi {{ lead.first_name }}", "en", None)
    return PendingSend(7, 1, decision, lead, "drip", "Drip")


def test_compose_leaves_lead_urls_untracked() -> None:
    settings = Settings(base_url=BASE_URL, secret_key=SECRET, templates_dir=TEMPLATES)
    lead = {"email": "a@acme.example", "first_name": EVIL, "company": EVIL_CO}
    email, links = compose_email(
        settings, TemplateRenderer(TEMPLATES), _pending(lead), datetime(2026, 3, 2, tzinfo=UTC)
    )
    assert f"Hi {EVIL}," in email.text and EVIL in email.html
    assert [(link.position, link.url.split("&")[0]) for link in links] == [(1, GUIDE)]
    clicks = set(CLICK.findall(email.html + email.text))
    assert [link_of(SECRET, c.rsplit("/", 1)[1]) for c in clicks] == [(7, 1)]


@pytest.fixture
def rt(db_url: str) -> Iterator[Runtime]:
    runtime = make_runtime(db_url, MemoryTransport())
    yield runtime
    runtime.close()


def test_sent_email_stores_no_link_for_lead_urls(rt: Runtime) -> None:
    add_lead(rt, "mallory@acme.example", first_name=EVIL, company=EVIL_CO)
    assert tick_at(rt, MONDAY).total_sent == 1
    with rt.sessions() as session:
        links = list(session.scalars(select(Link)))
    assert [link.position for link in links] == [1]
    assert links[0].url.startswith(GUIDE)
    assert not any("evil" in link.url or "phish" in link.url for link in links)
