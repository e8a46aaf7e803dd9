"""Erasure (right to be forgotten): personal data goes, the rows and counts stay, and a
hashed suppression keeps the address from being mailed or enrolled ever again."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import support.funnel as funnel_support
from sqlalchemy import select
from sqlalchemy.orm import Session
from support.engine import MONDAY, SEQUENCES, TEMPLATES, add_lead, messages, tick_at
from support.web import AUTH, BROWSER, Clock, Web, client_for, count, links_of, web_runtime
from typer.testing import CliRunner

from nurture.cli import app
from nurture.db.models import (
    Enrollment,
    Event,
    Handoff,
    Lead,
    Link,
    Message,
    ScoreEntry,
    StageChange,
    Suppression,
    WebhookAttempt,
    WebhookDelivery,
)
from nurture.db.session import transaction
from nurture.delivery.transports import MemoryTransport
from nurture.funnel.decisions import SalesDecision
from nurture.funnel.sales import apply_decision
from nurture.leads.erasure import erase_lead
from nurture.leads.importer import import_leads
from nurture.suppression.keys import email_hash

EMAIL = "Alex.Doe@Example.com"


@pytest.fixture
def web(db_url: str) -> Iterator[Web]:
    """Alex was mailed step 1, opened it, clicked, visited the site and unsubscribed."""
    transport = MemoryTransport()
    rt = web_runtime(db_url, transport)
    lead_id = add_lead(rt, EMAIL, last_name="Doe", title="CFO", attributes={"phone": "+1 555 0100"})
    tick_at(rt, MONDAY)
    clock = Clock(MONDAY + timedelta(hours=1))
    with client_for(rt, clock) as client:
        links = links_of(transport.messages[0])
        client.get(links.pixel, headers={"User-Agent": BROWSER})
        client.get(links.clicks[0], headers={"User-Agent": BROWSER})
        visit = {
            "email": EMAIL,
            "type": "page_visit",
            "url": "https://site.example/pricing?email=alex.doe@example.com",
            "title": "Pricing for Alex",
            "properties": {"name": "Alex Doe"},
            "occurred_at": MONDAY.isoformat(),
        }
        assert client.post("/api/v1/events", json=visit, headers=AUTH).status_code == 201
        client.post(links.unsubscribe, content=b"List-Unsubscribe=One-Click")
        yield Web(rt, transport, clock, client, {"lead_id": lead_id, "links": links})
    rt.close()


def erase(web: Web) -> None:
    with transaction(web.rt.sessions) as session:
        lead = session.get(Lead, web.extra["lead_id"])
        assert lead is not None
        report = erase_lead(session, lead, web.clock.now)
    assert not report.already and report.messages == 1 and report.events == 5


def snapshot(web: Web) -> dict[str, int]:
    return {
        model.__name__: count(web.rt, model)
        for model in (Lead, Message, Event, Enrollment, ScoreEntry)
    }


def test_erasure_removes_personal_data_and_keeps_the_counts(web: Web) -> None:
    before = snapshot(web)
    erase(web)
    assert snapshot(web) == before
    lead_id = web.extra["lead_id"]
    with web.rt.sessions() as session:
        lead = session.get(Lead, lead_id)
        assert lead is not None and lead.erased_at is not None
        assert lead.email == f"erased-{lead_id}@erased.invalid"
        assert (lead.first_name, lead.last_name, lead.company, lead.title) == ("", "", "", "")
        assert lead.attributes == {}
        message = session.scalars(select(Message)).one()
        assert message.to_email == lead.email and message.subject == ""
        assert message.status == "sent"
        kept = [(e.type, e.occurred_at) for e in session.scalars(select(Event).order_by(Event.id))]
        assert [t for t, _ in kept] == ["sent", "opened", "clicked", "page_visit", "unsubscribed"]
        dump = repr([e.data for e in session.scalars(select(Event))])
        dump += repr([s.detail for s in session.scalars(select(ScoreEntry))])
        for secret in ("alex", "Alex", "pricing", "Mozilla", "docs.example.com"):
            assert secret not in dump
        assert session.scalars(select(Link)).all() == []
        suppressions = [(s.email, s.reason) for s in session.scalars(select(Suppression))]
        assert suppressions == [(email_hash("alex.doe@example.com"), "erased")]
        enrollment = session.scalars(select(Enrollment)).one()
        # Alex unsubscribed before the erasure: the enrollment ended then, with that reason.
        assert (enrollment.status, enrollment.exit_reason) == ("exited", "suppressed: unsubscribed")


def test_the_erased_address_is_never_enrolled_or_mailed_again(web: Web, tmp_path: Path) -> None:
    erase(web)
    csv_file = tmp_path / "leads.csv"
    csv_file.write_text(f"email,first_name,persona\n{EMAIL.upper()},Alex,tester\n")
    report = import_leads(
        csv_file, web.rt.sessions, web.rt.funnel(), now=MONDAY + timedelta(days=1)
    )
    assert report.created == 1 and report.not_enrolled == {"suppressed": 1}
    upsert = web.client.post(
        "/api/v1/leads", json={"email": EMAIL, "persona": "tester"}, headers=AUTH
    )
    assert upsert.status_code == 200 and upsert.json()["not_enrolled"] == "suppressed"
    # Even an enrollment made behind the suppression's back sends nothing.
    new_id = upsert.json()["lead"]["id"]
    with transaction(web.rt.sessions) as session:
        session.add(
            Enrollment(
                lead_id=new_id,
                sequence_key="drip",
                sequence_version=messages(web.rt)[0].sequence_version,
                current_step="welcome",
                step_started_at=MONDAY,
                next_run_at=MONDAY + timedelta(days=1),
                entered_at=MONDAY,
            )
        )
    report_tick = tick_at(web.rt, MONDAY + timedelta(days=1, hours=1))
    assert report_tick.total_sent == 0 and len(web.transport.sent) == 1


def test_tracking_hits_on_erased_mail_are_not_recorded(web: Web) -> None:
    erase(web)
    before = count(web.rt, Event)
    links = web.extra["links"]
    assert web.client.get(links.pixel).status_code == 200
    assert web.client.get(links.clicks[0]).status_code == 404  # its links are gone
    assert web.client.post(links.unsubscribe).status_code == 200
    event = {"email": EMAIL, "type": "page_visit", "occurred_at": MONDAY.isoformat()}
    response = web.client.post("/api/v1/events", json=event, headers=AUTH)
    assert response.status_code == 409 and "erased" in response.json()["detail"][0]["msg"]
    assert count(web.rt, Event) == before


def test_erase_through_the_api(web: Web) -> None:
    lead_id = web.extra["lead_id"]
    assert web.client.post(f"/api/v1/leads/{lead_id}/erase").status_code == 401
    response = web.client.post(f"/api/v1/leads/{lead_id}/erase", headers=AUTH)
    assert response.status_code == 200
    assert response.json()["already_erased"] is False and response.json()["events"] == 5
    again = web.client.delete(f"/api/v1/leads/{lead_id}", headers=AUTH)
    assert again.status_code == 200 and again.json()["already_erased"] is True
    assert web.client.delete("/api/v1/leads/999", headers=AUTH).status_code == 404
    shown = web.client.get(f"/api/v1/leads/{lead_id}", headers=AUTH).json()
    assert shown["lead"]["email"].endswith("@erased.invalid") and shown["lead"]["erased_at"]


def test_erase_from_the_command_line(
    web: Web, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("NURTURE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NURTURE_DATABASE_URL", db_url)
    monkeypatch.setenv("NURTURE_SEQUENCES_DIR", str(SEQUENCES))
    monkeypatch.setenv("NURTURE_TEMPLATES_DIR", str(TEMPLATES))
    runner = CliRunner()
    result = runner.invoke(app, ["leads", "erase", "nobody@example.com", "--yes"])
    assert result.exit_code == 1 and "no lead has the email" in result.output
    result = runner.invoke(app, ["leads", "erase", "alex.doe@EXAMPLE.com"], input="n\n")
    assert result.exit_code == 1 and count(web.rt, Suppression, reason="erased") == 0
    result = runner.invoke(app, ["leads", "erase", "alex.doe@EXAMPLE.com", "--yes"])
    assert result.exit_code == 0, result.output
    assert "erased lead" in result.output
    assert count(web.rt, Suppression, reason="erased") == 1
    result = runner.invoke(app, ["leads", "erase", EMAIL, "--yes"])
    assert result.exit_code == 0 and "already erased" in result.output


def test_erasure_scrubs_the_funnel_and_keeps_its_history(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ana went MQL (hot: pricing views), SAL, SQL with BANT answers, was rejected with a
    note, and a hand-off notification about her is still being retried."""
    hook = "http://127.0.0.1:9/hooks/handoff"  # nothing listens on the discard port
    funnel_support.use_fixture_folder(monkeypatch)
    monkeypatch.setenv("NURTURE_HANDOFF_WEBHOOK_URLS", hook)
    rt = funnel_support.make_runtime(db_url, handoff_webhook_urls=hook)
    start = funnel_support.MONDAY
    ana = funnel_support.add_lead(rt, "ana.kim@acme.example", first_name="Ana", last_name="Kim")
    for minutes in (1, 2, 3):
        at = start + timedelta(minutes=minutes)
        url = "https://acme.example/pricing?for=ana.kim"
        funnel_support.behave(rt, ana, "pricing_page_view", at, url=url, title="Pricing for Ana")
    funnel_support.tick_at(rt, start + timedelta(minutes=5))  # the webhook fails: retried
    decisions = [
        {"decision": "accept", "actor": "sam"},
        {
            "decision": "qualify",
            "bant": {
                "budget": "Ana Kim has 50k",
                "authority": "Ana",
                "need": "AP",
                "timeline": "Q3",
            },
        },
        {"decision": "reject", "reason_code": "timing", "note": "Ana Kim: call back in May"},
    ]
    for n, fields in enumerate(decisions):
        with transaction(rt.sessions) as session:
            lead = session.get(Lead, ana)
            assert lead is not None
            at = start + timedelta(hours=n + 1)
            apply_decision(session, lead, SalesDecision(**fields), at, funnel_support.funnel(rt))
    models = (StageChange, Handoff, WebhookDelivery, WebhookAttempt)
    before = {model.__name__: count(rt, model) for model in models}
    with rt.sessions() as session:
        path = [(c.from_stage, c.to_stage, c.reason_kind, c.at, c.score) for c in changes(session)]
    assert [p[:2] for p in path] == [
        ("lead", "mql"),
        ("mql", "sal"),
        ("sal", "sql"),
        ("sql", "recycled"),
    ]
    assert before["WebhookAttempt"] == 1

    with transaction(rt.sessions) as session:
        lead = session.get(Lead, ana)
        assert lead is not None
        erase_lead(session, lead, start + timedelta(days=1))

    assert {model.__name__: count(rt, model) for model in models} == before
    with rt.sessions() as session:
        kept = changes(session)
        assert [(c.from_stage, c.to_stage, c.reason_kind, c.at, c.score) for c in kept] == path
        reject = kept[-1]
        assert reject.reason_detail == "reject (timing)"
        assert reject.data["reason_code"] == "timing" and "note" not in reject.data
        assert kept[2].data["bant"] == ["authority", "budget", "need", "timeline"]
        assert kept[0].data["rules"] == ["pricing-views"] and kept[0].data["hot"] is True
        deliveries = session.scalars(select(WebhookDelivery)).all()
        assert [(d.status, d.last_error) for d in deliveries] == [
            ("failed", "cancelled: the lead was erased")
        ]
        assert deliveries[0].payload == {"event": "handoff.fast_track", "lead": "(erased)"}
        dump = repr([(c.reason_detail, c.data) for c in kept] + [d.payload for d in deliveries])
        for secret in ("Ana", "ana.kim", "Kim", "50k", "call back", "Pricing for"):
            assert secret not in dump
    rt.close()


def changes(session: Session) -> list[StageChange]:
    query = select(StageChange).order_by(StageChange.at, StageChange.id)
    return list(session.scalars(query))
