"""Sales decisions through the API (``POST /api/v1/leads/{id}/decision``, as a sales tool
or a CRM webhook calls it) and the ``nurture sales`` commands."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from freezegun import freeze_time
from support.funnel import (
    MONDAY,
    add_lead,
    behave,
    history,
    lead,
    make_runtime,
    path,
    use_fixture_folder,
)
from typer.testing import CliRunner

from nurture.cli import app as cli
from nurture.runtime import Runtime
from nurture.web.app import create_app

KEY = "test-api-key"
AUTH = {"X-API-Key": KEY}
BANT = {"budget": "50k", "authority": "CFO", "need": "AP backlog", "timeline": "Q3"}


@pytest.fixture
def rt(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    use_fixture_folder(monkeypatch)
    runtime = make_runtime(db_url, api_keys=KEY)
    yield runtime
    runtime.close()


@pytest.fixture
def client(rt: Runtime) -> TestClient:
    return TestClient(create_app(rt, clock=lambda: MONDAY + timedelta(hours=1)))


def mql(rt: Runtime, email: str = "ana@acme.example", **fields: Any) -> int:
    lead_id = add_lead(rt, email, enrolled=False, **fields)
    for n in range(4):
        behave(rt, lead_id, "page_visit", MONDAY + timedelta(seconds=n))
    assert lead(rt, lead_id).lifecycle_stage == "mql"
    return lead_id


def decide(client: TestClient, lead_id: int, **body: Any) -> Any:
    return client.post(f"/api/v1/leads/{lead_id}/decision", json=body, headers=AUTH)


def test_a_crm_walks_the_lead_to_customer(rt: Runtime, client: TestClient) -> None:
    lead_id = mql(rt)
    accepted = decide(client, lead_id, decision="accept", actor="sam@sales.example")
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["stage"] == "sal" and accepted.json()["owner"] == "sam@sales.example"
    qualified = decide(client, lead_id, decision="qualify", bant=BANT, note="call went well")
    assert qualified.status_code == 200, qualified.text
    change = qualified.json()["change"]
    assert (change["from"], change["to"], change["reason"]) == ("sal", "sql", "sales")
    assert change["data"]["bant"] == BANT and 59.9 < change["score"] <= 60  # an hour of decay
    assert decide(client, lead_id, decision="opportunity", actor="crm").status_code == 200
    assert decide(client, lead_id, decision="customer", actor="crm").status_code == 200
    assert path(rt, lead_id) == ["lead", "mql", "sal", "sql", "opportunity", "customer"]
    final = decide(client, lead_id, decision="disqualify")
    assert final.status_code == 409
    assert (
        final.json()["detail"] == "cannot move a customer lead to disqualified: customer is final"
    )


def test_decisions_missing_what_they_need_are_refused(rt: Runtime, client: TestClient) -> None:
    lead_id = mql(rt)
    partial = decide(client, lead_id, decision="qualify", bant={"budget": "50k", "need": " "})
    assert partial.status_code == 422
    (error,) = partial.json()["detail"]
    assert error["loc"] == ["body", "bant"] and error["field"] == "bant"
    assert error["msg"] == "qualify needs BANT answers for authority, need, timeline"
    unknown = decide(client, lead_id, decision="reject", reason_code="bored")
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["msg"] == "unknown reject reason 'bored' (no_budget, timing)"
    no_reason = decide(client, lead_id, decision="reject")
    assert no_reason.json()["detail"][0]["loc"] == ["body", "reason_code"]
    assert no_reason.json()["detail"][0]["field"] == "reason_code"
    bad = decide(client, lead_id, decision="promote")
    assert bad.status_code == 422
    assert lead(rt, lead_id).lifecycle_stage == "mql" and len(history(rt, lead_id)) == 1


def test_disallowed_decision_is_a_conflict_and_changes_nothing(
    rt: Runtime, client: TestClient
) -> None:
    lead_id = add_lead(rt, "ben@acme.example")
    refused = decide(client, lead_id, decision="accept")
    assert refused.status_code == 409
    expected = "cannot move from lead to sal (from lead: mql, sql, disqualified)"
    assert refused.json()["detail"] == expected
    assert lead(rt, lead_id).owner == ""
    assert history(rt, lead_id) == []


def test_auth_and_unknown_leads(rt: Runtime, client: TestClient) -> None:
    lead_id = mql(rt)
    anonymous = client.post(f"/api/v1/leads/{lead_id}/decision", json={"decision": "accept"})
    assert anonymous.status_code == 401
    assert decide(client, 9999, decision="accept").status_code == 404
    assert lead(rt, lead_id).lifecycle_stage == "mql"


def test_funnel_view_shows_why_a_lead_is_never_mql(rt: Runtime, client: TestClient) -> None:
    lead_id = add_lead(rt, "solo@acme.example", company_size=2)
    for n in range(8):
        behave(rt, lead_id, "page_visit", MONDAY + timedelta(seconds=n))
    view = client.get(f"/api/v1/leads/{lead_id}/funnel", headers=AUTH)
    assert view.status_code == 200, view.text
    found = view.json()
    assert found["stage"] == "lead" and found["score"]["total"] > 99  # 100, an hour old
    assert found["assessment"]["excluded"] == [
        {"name": "sole-trader", "reason": "sole trader: under 10 employees"}
    ]


def test_sales_commands(rt: Runtime, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NURTURE_DATABASE_URL", db_url)
    monkeypatch.setenv("COLUMNS", "200")
    lead_id = mql(rt, "Cho@Acme.example")
    runner = CliRunner()
    with freeze_time(MONDAY + timedelta(hours=1)):
        accepted = runner.invoke(cli, ["sales", "accept", "cho@acme.example", "--actor", "sam"])
        missing = runner.invoke(cli, ["sales", "qualify", "cho@acme.example", "--budget", "50k"])
        rejected = runner.invoke(
            cli, ["sales", "reject", "cho@acme.example", "--reason", "timing", "--note", "Q3"]
        )
        unknown = runner.invoke(cli, ["sales", "disqualify", "nobody@acme.example"])
        status = runner.invoke(cli, ["sales", "status", "cho@acme.example", "--json"])
        shown = runner.invoke(cli, ["sales", "status", "cho@acme.example"])
    assert accepted.exit_code == 0, accepted.output
    assert "Cho@Acme.example: mql -> sal" in accepted.output
    assert missing.exit_code == 1
    assert "bant: qualify needs BANT answers for authority, need, timeline" in missing.output
    assert rejected.exit_code == 0, rejected.output
    assert "sal -> recycled" in rejected.output and "silent until 2026-04-01" in rejected.output
    assert unknown.exit_code == 1 and "no lead with email nobody@acme.example" in unknown.output
    found = json.loads(status.output)
    assert found["stage"] == "recycled" and found["recycle_reason"] == "timing"
    assert [h["to"] for h in found["stage_history"]] == ["mql", "sal", "recycled"]
    assert "recycled (timing): silent until 2026-04-01" in shown.output
    assert path(rt, lead_id) == ["lead", "mql", "sal", "recycled"]


def test_status_shows_a_trigger_blocked_by_an_exclusion(
    rt: Runtime, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NURTURE_DATABASE_URL", db_url)
    monkeypatch.setenv("COLUMNS", "200")
    lead_id = add_lead(rt, "solo@acme.example", enrolled=False, company_size=2)
    behave(rt, lead_id, "demo_requested", MONDAY)
    assert lead(rt, lead_id).lifecycle_stage == "lead"  # the exclusion stopped the trigger
    runner = CliRunner()
    with freeze_time(MONDAY + timedelta(hours=1)):
        as_json = runner.invoke(cli, ["sales", "status", "solo@acme.example", "--json"])
        shown = runner.invoke(cli, ["sales", "status", "solo@acme.example"])
    assert shown.exit_code == 0, shown.output
    triggers = json.loads(as_json.output)["assessment"]["fast_track"]
    demo = next(t for t in triggers if t["name"] == "demo-request")
    assert demo["fired"] and demo["blocked_by"] == "sole-trader"
    assert "fast track demo-request: blocked by exclusion sole-trader" in shown.output
    assert "fired" not in shown.output
    assert "fast-track events count since entering the current stage" in shown.output


def test_the_lead_api_shows_the_stage_history_as_lead_show_does(
    rt: Runtime, client: TestClient
) -> None:
    """GET /api/v1/leads/{id} and `nurture lead show` are one view: both carry the stage
    changes (the API's own timeline used to leave them out)."""
    lead_id = mql(rt)
    assert decide(client, lead_id, decision="accept", actor="sam@sales.example").status_code == 200
    response = client.get(f"/api/v1/leads/{lead_id}", headers=AUTH)
    assert response.status_code == 200
    stages = [i for i in response.json()["timeline"] if i["kind"] == "stage"]
    assert [(i["from"], i["to"]) for i in stages] == [("lead", "mql"), ("mql", "sal")]
    assert stages[-1]["actor"] == "sam@sales.example"
    times = [item["at"] for item in response.json()["timeline"]]
    assert times == sorted(times)  # the API's timeline runs forward in time
