"""The JSON API: API-key auth on every route, 422 naming the field, lead upsert and read,
events one by one and in batches with dedupe keys, the unknown-email policy."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from support import use_scoring
from support.engine import MONDAY, REPO_ROOT, add_lead
from support.web import API_KEY, AUTH, OTHER_KEY, Clock, Web, client_for, count, web_runtime

from nurture.db.models import Event, Lead, ScoreEntry, StageChange
from nurture.delivery.transports import MemoryTransport

try:
    from fastapi.routing import iter_route_contexts
except ImportError:  # FastAPI < 0.137 copies the routes of included routers into app.routes

    def iter_route_contexts(routes: Any) -> Any:  # type: ignore[misc]
        return iter(routes)


BEFORE = (MONDAY - timedelta(hours=2)).isoformat()


def make_web(db_url: str, **overrides: Any) -> Iterator[Web]:
    transport = MemoryTransport()
    rt = web_runtime(db_url, transport, **overrides)
    clock = Clock(MONDAY)
    with client_for(rt, clock) as client:
        yield Web(rt, transport, clock, client)
    rt.close()


@pytest.fixture
def web(db_url: str) -> Iterator[Web]:
    yield from make_web(db_url)


def post(web: Web, url: str, body: Any, **kw: Any) -> Any:
    return web.client.post(url, json=body, headers=kw.pop("headers", AUTH), **kw)


def event(**fields: Any) -> dict[str, Any]:
    return {"email": "sam@example.com", "type": "page_visit", "occurred_at": BEFORE, **fields}


# Routes with a body they accept, for the check that a valid key gets through. Which routes
# need a key at all is not listed by hand: the test below walks the app's routes.
ROUTES = [
    ("post", "/api/v1/leads", {"email": "sam@example.com"}),
    ("get", "/api/v1/leads/1", None),
    ("post", "/api/v1/leads/1/erase", None),
    ("delete", "/api/v1/leads/1", None),
    ("post", "/api/v1/events", {"email": "sam@example.com", "type": "page_visit"}),
]


@pytest.mark.parametrize(("method", "url", "body"), ROUTES)
def test_every_api_route_needs_a_valid_key(
    web: Web, method: str, url: str, body: dict[str, Any] | None
) -> None:
    add_lead(web.rt, "lee@example.com", enrolled=False)
    kwargs: dict[str, Any] = {"json": body} if body else {}
    for headers, expected in (
        ({}, "missing API key"),
        ({"Authorization": "Bearer wrong-key"}, "invalid API key"),
        ({"X-API-Key": API_KEY[:-1]}, "invalid API key"),
        ({"Authorization": f"Basic {API_KEY}"}, "missing API key"),
    ):
        response = web.client.request(method, url, headers=headers, **kwargs)
        assert response.status_code == 401, (headers, response.text)
        assert response.json()["detail"].startswith(expected)
        assert response.headers["www-authenticate"] == "Bearer"
    assert count(web.rt, Lead) == 1 and count(web.rt, Event) == 0
    for headers in (AUTH, {"X-API-Key": OTHER_KEY}):
        response = web.client.request(method, url, headers=headers, **kwargs)
        assert response.status_code in (200, 201), response.text


def api_routes(app: Any) -> list[tuple[str, str]]:
    """Every (method, path) the app serves under /api/v1, routers' prefixes included."""
    return [
        (method, route.path)
        for route in iter_route_contexts(app.routes)
        if (route.path or "").startswith("/api/v1")
        for method in sorted(route.methods or ())
    ]


def test_every_registered_api_route_refuses_a_request_without_a_valid_key(web: Web) -> None:
    lead_id = add_lead(web.rt, "lee@example.com", enrolled=False)
    routes = api_routes(web.client.app)
    assert {
        ("GET", "/api/v1/leads/{lead_id}"),
        ("GET", "/api/v1/leads/{lead_id}/funnel"),
        ("DELETE", "/api/v1/leads/{lead_id}"),
        ("POST", "/api/v1/events"),
    } <= set(routes)  # the walk found the routes (not an empty or renamed prefix)
    for method, template in routes:
        url = re.sub(r"\{[^}]+\}", str(lead_id), template)
        for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"X-API-Key": ""}):
            response = web.client.request(method, url, headers=headers, json={})
            assert response.status_code == 401, (method, url, headers, response.text)
    with web.rt.sessions() as session:
        lead = session.get(Lead, lead_id)
        assert lead is not None and lead.erased_at is None
    assert count(web.rt, Lead) == 1 and count(web.rt, Event) == 0


def test_without_configured_keys_the_api_refuses_everyone(db_url: str) -> None:
    for web in make_web(db_url, api_keys=""):
        response = post(web, "/api/v1/events", event())
        assert response.status_code == 401
        assert post(web, "/api/v1/events", event(), headers={"X-API-Key": ""}).status_code == 401


def test_health_and_openapi_need_no_key(web: Web) -> None:
    assert web.client.get("/healthz").json() == {"status": "ok", "database": "ok"}
    spec = web.client.get("/openapi.json").json()
    assert {"/api/v1/leads", "/api/v1/events", "/o/{token}.gif"} <= set(spec["paths"])
    assert web.client.get("/docs").status_code == 200


def test_health_reports_a_database_that_is_down(tmp_path: Any) -> None:
    from nurture.bootstrap import build_runtime
    from nurture.settings import Settings
    from nurture.web.app import create_app

    rt = build_runtime(Settings(database_url=f"sqlite:///{tmp_path}/missing/dir/x.db"))
    response = TestClient(create_app(rt)).get("/healthz")
    assert response.status_code == 503 and response.json()["status"] == "error"


def test_post_lead_creates_then_updates_and_enrolls(web: Web) -> None:
    body = {"email": "Sam@Example.com", "first_name": "Sam", "persona": "TESTER",
            "attributes": {"plan": "pro"}}  # fmt: skip
    created = post(web, "/api/v1/leads", body)
    assert created.status_code == 201, created.text
    data = created.json()
    assert data["created"] and data["enrolled_in"] == "drip"
    assert data["lead"]["persona"] == "tester" and data["lead"]["timezone"] == "UTC"
    update = {"email": "sam@EXAMPLE.com", "company": "Acme", "attributes": {"seats": 5}}
    updated = post(web, "/api/v1/leads", update)
    assert updated.status_code == 200
    lead = updated.json()["lead"]
    assert lead["id"] == data["lead"]["id"] and lead["first_name"] == "Sam"
    assert lead["company"] == "Acme" and lead["attributes"] == {"plan": "pro", "seats": 5}
    assert updated.json()["not_enrolled"] == "already_active"
    assert count(web.rt, Lead) == 1


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"email": "not-an-email"}, "email", "is not a valid email address"),
        ({"email": "a@example.com", "persona": "wizard"}, "persona", "unknown persona"),
        ({"email": "a@example.com", "colour": "red"}, "colour", "unknown field"),
        ({"email": "a@example.com", "country": "Atlantis"}, "country", "unknown country"),
        ({"first_name": "Al"}, "email", "Field required"),
    ],
)
def test_bad_lead_bodies_get_422_naming_the_field(
    web: Web, body: dict[str, Any], field: str, message: str
) -> None:
    response = post(web, "/api/v1/leads", body)
    assert response.status_code == 422
    [detail] = response.json()["detail"]
    assert detail["field"] == field and detail["loc"] == ["body", field]
    assert message in detail["msg"]
    assert count(web.rt, Lead) == 0


def test_one_event_is_stored_once(web: Web) -> None:
    first = post(web, "/api/v1/events", event(dedupe_key="visit-1", url="https://x.example/p"))
    assert first.status_code == 201 and first.json()["status"] == "created"
    again = post(web, "/api/v1/events", event(dedupe_key="visit-1", url="https://x.example/p"))
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "lead_id": first.json()["lead_id"]}
    assert count(web.rt, Event) == 1
    with web.rt.sessions() as session:
        stored = session.scalars(select(Event)).one()
    assert stored.dedupe_key == "api:visit-1" and stored.data["url"] == "https://x.example/p"


def test_without_a_dedupe_key_the_same_content_is_a_duplicate(web: Web) -> None:
    body = event(url="https://x.example/pricing", properties={"plan": "pro"})
    assert post(web, "/api/v1/events", body).json()["status"] == "created"
    assert post(web, "/api/v1/events", body).json()["status"] == "duplicate"
    other = post(web, "/api/v1/events", {**body, "occurred_at": MONDAY.isoformat()})
    assert other.json()["status"] == "created"
    assert count(web.rt, Event) == 2


def test_a_batch_dedupes_within_itself_and_against_stored_events(web: Web) -> None:
    post(web, "/api/v1/events", event(dedupe_key="k1"))
    batch = {
        "events": [
            event(dedupe_key="k1"),
            event(dedupe_key="k2", type="content_download", content_stage="Decision"),
            event(dedupe_key="k2", type="content_download"),
            event(dedupe_key="k3", email="new@example.com", type="demo_requested"),
        ]
    }
    response = post(web, "/api/v1/events", batch)
    assert response.status_code == 200, response.text
    data = response.json()
    assert [r["status"] for r in data["results"]] == [
        "duplicate",
        "created",
        "duplicate",
        "created",
    ]
    assert (data["created"], data["duplicates"], data["rejected"]) == (2, 2, 0)
    assert data["leads_created"] == 1  # new@; sam was created by the first event
    assert count(web.rt, Event) == 3 and count(web.rt, Lead) == 2
    with web.rt.sessions() as session:
        download = session.scalars(select(Event).where(Event.dedupe_key == "api:k2")).one()
    assert download.data["content_stage"] == "decision"


@pytest.mark.parametrize(
    ("bad", "field", "message"),
    [
        ({"occurred_at": "2026-03-01T09:00:00"}, "events[3].occurred_at", "timezone"),
        ({"occurred_at": "yesterday"}, "events[3].occurred_at", "datetime"),
        ({"type": "teleported"}, "events[3].type", "page_visit"),
        ({"email": "nobody"}, "events[3].email", "not a valid email"),
        ({"colour": "red"}, "events[3].colour", "unknown field"),
        ({"content_stage": "late"}, "events[3].content_stage", "awareness"),
        ({"properties": {"x": "a\u0000b"}}, "events[3].properties", "NUL"),
    ],
)
def test_a_bad_event_in_a_batch_gets_422_naming_its_index(
    web: Web, bad: dict[str, Any], field: str, message: str
) -> None:
    events = [event(dedupe_key=f"ok-{i}") for i in range(5)]
    events[3] = {**events[3], **bad}
    response = post(web, "/api/v1/events", {"events": events})
    assert response.status_code == 422
    details = response.json()["detail"]
    assert [d["field"] for d in details] == [field]
    assert message in details[0]["msg"]
    assert details[0]["loc"][:3] == ["body", "events", 3]
    assert count(web.rt, Event) == 0  # a bad body stores nothing


def test_bad_single_events_get_422_naming_the_field(web: Web) -> None:
    response = post(web, "/api/v1/events", {"type": "page_visit"})
    assert response.status_code == 422
    assert [d["field"] for d in response.json()["detail"]] == ["email"]
    # Dated after the server's now: a valid body the server cannot take now (409).
    response = post(
        web, "/api/v1/events", event(occurred_at=(MONDAY + timedelta(days=1)).isoformat())
    )
    assert response.status_code == 409
    assert response.json()["detail"][0]["field"] == "occurred_at"
    assert "in the future" in response.json()["detail"][0]["msg"]
    response = post(web, "/api/v1/events", {"events": []})
    assert response.status_code == 422 and response.json()["detail"][0]["field"] == "events"
    response = web.client.post(
        "/api/v1/events", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert count(web.rt, Event) == 0


def test_unknown_emails_create_leads_by_default(web: Web) -> None:
    response = post(web, "/api/v1/events", event(email="Fresh@Example.com"))
    assert response.status_code == 201
    with web.rt.sessions() as session:
        lead = session.scalars(select(Lead)).one()
        history = session.scalars(select(StageChange).where(StageChange.lead_id == lead.id))
        (first,) = history.all()
    assert lead.email == "Fresh@example.com" and response.json()["lead_id"] == lead.id
    # Its stage history starts like any lead's: from none, saying where it came from.
    assert (first.from_stage, first.to_stage, first.actor) == ("", lead.lifecycle_stage, "events")
    assert first.reason_detail == "created by an event for an unknown email"


def test_unknown_emails_can_be_rejected(db_url: str) -> None:
    for web in make_web(db_url, unknown_email_events="reject"):
        add_lead(web.rt, "known@example.com", enrolled=False)
        single = post(web, "/api/v1/events", event(email="stranger@example.com"))
        assert single.status_code == 409  # a valid event the stored leads cannot take
        assert single.json()["detail"][0]["field"] == "email"
        assert "no lead has this email" in single.json()["detail"][0]["msg"]
        batch = post(
            web,
            "/api/v1/events",
            {"events": [event(email="KNOWN@example.com"), event(email="stranger@example.com")]},
        )
        results = batch.json()["results"]
        assert [r["status"] for r in results] == ["created", "rejected"]
        assert results[1]["errors"][0]["field"] == "events[1].email"
        assert count(web.rt, Lead) == 1 and count(web.rt, Event) == 1


@pytest.fixture
def shipped_scoring(web: Web) -> None:
    """The shipped scoring.yaml (the fixture sequences have none)."""
    use_scoring(web.rt, REPO_ROOT / "sequences" / "scoring.yaml")


def test_get_lead_shows_score_breakdown_and_timeline(web: Web, shipped_scoring: None) -> None:
    lead_id = add_lead(web.rt, "sam@example.com", enrolled=False)
    for key, kind in (("a", "pricing_page_view"), ("b", "demo_requested")):
        post(web, "/api/v1/events", event(dedupe_key=key, type=kind))
    response = web.client.get(f"/api/v1/leads/{lead_id}", headers=AUTH)
    assert response.status_code == 200
    data = response.json()
    score = data["score"]
    assert score["total"] > 0
    assert round(sum(r["points"] for r in score["by_rule"]), 2) == score["total"]
    kinds = [item["kind"] for item in data["timeline"]]
    assert kinds.count("event") == 2 and "score" in kinds
    assert [i["type"] for i in data["timeline"] if i["kind"] == "event"] == [
        "pricing_page_view",
        "demo_requested",
    ]
    assert web.client.get("/api/v1/leads/999", headers=AUTH).status_code == 404


def test_api_events_are_scored_in_the_transaction_that_stores_them(
    web: Web, shipped_scoring: None
) -> None:
    add_lead(web.rt, "sam@example.com", enrolled=False)
    body = {"events": [event(dedupe_key=k, type="pricing_page_view") for k in "abc"]}
    assert post(web, "/api/v1/events", body).json()["created"] == 3
    with web.rt.sessions() as session:
        assert all(e.scored_at is not None for e in session.scalars(select(Event)))
        rules = [entry.rule for entry in session.scalars(select(ScoreEntry))]
    assert rules  # pricing views score (capped rules count the batch's events in order)


def test_when_inline_scoring_fails_the_events_stay_stored_and_unscored(
    web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("funnel down")

    monkeypatch.setattr("nurture.funnel.pipeline.evaluate_leads", broken)
    body = {"events": [event(dedupe_key="a", type="demo_requested"), event(dedupe_key="b")]}
    response = post(web, "/api/v1/events", body)
    assert response.status_code == 200 and response.json()["created"] == 2
    with web.rt.sessions() as session:
        assert [e.scored_at for e in session.scalars(select(Event))] == [None, None]
        assert (
            session.scalars(select(ScoreEntry).where(ScoreEntry.event_id.is_not(None))).all() == []
        )


def test_a_405_lists_every_method_of_the_path(web: Web) -> None:
    # GET and DELETE on /api/v1/leads/{id} are two routes; Allow names both.
    response = web.client.request("PATCH", "/api/v1/leads/1", headers=AUTH)
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET"
    response = web.client.request("PUT", "/u/some-token")
    assert (response.status_code, response.headers["allow"]) == (405, "GET, POST")
