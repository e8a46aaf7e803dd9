"""`nurture lead show EMAIL`: fields, score, a breakdown that adds up, the timeline."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy.orm import Session, sessionmaker
from support import REPO
from typer.testing import CliRunner

from nurture.cli import app
from nurture.db.models import Enrollment, Event, Lead, Message, StageChange
from nurture.db.session import transaction
from nurture.scoring.ledger import refresh_fit, score_events
from nurture.scoring.loading import load_rules

ROOT = REPO
NOW = datetime.now(UTC).replace(microsecond=0)
EMAIL = "Julia.Young@Northwind.example"
runner = CliRunner()


@pytest.fixture
def lead_with_history(
    session_factory: sessionmaker[Session], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> int:
    monkeypatch.setenv("NURTURE_DATABASE_URL", db_url)
    monkeypatch.setenv("NURTURE_SEQUENCES_DIR", str(ROOT / "sequences"))
    monkeypatch.setenv("COLUMNS", "220")
    rules = load_rules(ROOT / "sequences" / "scoring.yaml")
    start = NOW - timedelta(days=100)
    with transaction(session_factory) as s:
        lead = Lead(
            email=EMAIL, first_name="Julia", last_name="Young", company="Northwind",
            title="Director of Finance", industry="retail", company_size=850, country="US",
            timezone="America/Chicago", persona="finance_leader", attributes={"erp": "NetSuite"},
            created_at=start,
        )  # fmt: skip
        s.add(lead)
        s.flush()
        refresh_fit(s, [lead.id], start, rules=rules)
        enrollment = Enrollment(
            lead_id=lead.id, sequence_key="finance-leader-decision", sequence_version="3",
            current_step="demo", next_run_at=NOW + timedelta(days=2),
        )  # fmt: skip
        s.add(enrollment)
        s.flush()
        s.add(
            Message(
                enrollment_id=enrollment.id, lead_id=lead.id,
                sequence_key="finance-leader-decision", sequence_version="3", step_id="roi",
                status="sent", subject="Put a number on AP automation",
                created_at=NOW - timedelta(days=91), sent_at=NOW - timedelta(days=90),
            )
        )  # fmt: skip
        events = [
            Event(
                lead_id=lead.id, type=t, occurred_at=NOW - timedelta(days=d), dedupe_key=f"k{n}",
                data={"url": u} if u else {}, is_human=h,
            )
            for n, (t, d, u, h) in enumerate(
                [
                    ("clicked", 89.9, "https://www.ledgerline.example/roi-calculator", False),
                    ("page_visit", 90, "https://www.ledgerline.example/pricing", True),
                    ("demo_requested", 10, "", True),
                ]
            )
        ]  # fmt: skip
        s.add_all(events)
        s.flush()
        score_events(s, [e.id for e in events], NOW, rules=rules)
        return lead.id


def test_lead_show_prints_a_breakdown_that_adds_up(lead_with_history: int) -> None:
    result = runner.invoke(app, ["lead", "show", EMAIL.lower()])
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"{EMAIL}  (lead {lead_with_history}) Julia Young" in out
    assert "lifecycle: lead  journey: awareness" in out
    assert "enrollment: finance-leader-decision v3, step demo (active, next run" in out
    # fit 43, pricing 10 -> 5 after one half-life, demo 30 * 0.5 ** (10/90)
    demo = round(30 * 0.5 ** (10 / 90), 2)
    total = Decimal("48") + Decimal(str(demo))
    assert f"fit 43 + engagement {5 + demo:g} + negative 0 = total {total}" in out
    rows = dict(
        re.findall(r"│ ([a-z_]+) +│ (?:fit|engagement|negative) +│ +\d+ │ +([-\d.]+) │", out)
    )
    assert rows["decision_maker"] == "10" and rows["pricing_page_visit"] == "5"
    assert sum(Decimal(v) for v in rows.values()) == total
    assert re.search(rf"│ total +│ +│ +│ +{total} │", out)


def test_lead_show_timeline_is_newest_first_with_bots_marked(lead_with_history: int) -> None:
    result = runner.invoke(app, ["lead", "show", EMAIL, "--json", "--limit", "6"])
    assert result.exit_code == 0, result.output
    view = json.loads(result.output)
    timeline = view["timeline"]
    assert len(timeline) == 6
    times = [item["at"] for item in timeline]
    assert times == sorted(times, reverse=True)
    kinds = [(i["kind"], i["title"], i["status"]) for i in timeline[:4]]
    assert kinds == [
        ("score", "demo_requested", "engagement"),
        ("event", "demo_requested", "human"),
        ("event", "clicked", "bot"),
        ("score", "pricing_page_visit", "engagement"),
    ]
    assert timeline[3]["points"] == 10 and timeline[3]["decayed"] == 5
    by_rule = view["score"]["by_rule"]
    assert sum(Decimal(str(r["points"])) for r in by_rule) == Decimal(str(view["score"]["total"]))


def _add_stage_changes(session_factory: sessionmaker[Session], lead_id: int) -> None:
    with transaction(session_factory) as s:
        s.add_all(
            [
                StageChange(
                    lead_id=lead_id, from_stage="lead", to_stage="mql", at=NOW - timedelta(days=9),
                    reason_kind="trigger", reason_detail="demo_requested", score=80.5,
                ),
                StageChange(
                    lead_id=lead_id, from_stage="mql", to_stage="sal", at=NOW - timedelta(days=8),
                    reason_kind="sales", reason_detail="accepted", actor="sam@sales.example",
                    score=78.25,
                ),
            ]
        )  # fmt: skip


def test_lead_show_timeline_has_the_stage_changes(
    lead_with_history: int, session_factory: sessionmaker[Session]
) -> None:
    _add_stage_changes(session_factory, lead_with_history)

    as_json = runner.invoke(app, ["lead", "show", EMAIL, "--json"])
    text = runner.invoke(app, ["lead", "show", EMAIL])

    assert as_json.exit_code == 0, as_json.output
    stages = [i for i in json.loads(as_json.output)["timeline"] if i["kind"] == "stage"]
    assert [(i["from"], i["to"], i["reason"], i["actor"], i["score"]) for i in stages] == [
        ("mql", "sal", "sales", "sam@sales.example", 78.25),
        ("lead", "mql", "trigger", "", 80.5),
    ]
    assert stages[0]["title"] == "mql -> sal" and stages[0]["reason_detail"] == "accepted"
    assert text.exit_code == 0, text.output
    sal = next(line for line in text.output.splitlines() if "mql -> sal" in line)
    assert "sales: accepted (score 78.25)" in sal and "by sam@sales.example" in sal
    assert "lead -> mql" in text.output and "trigger: demo_requested (score 80.5)" in text.output
    earlier = runner.invoke(
        app, ["lead", "show", EMAIL, "--json", "--at", (NOW - timedelta(days=20)).isoformat()]
    )
    assert all(i["kind"] != "stage" for i in json.loads(earlier.output)["timeline"])


def test_lead_show_at_an_earlier_time(lead_with_history: int) -> None:
    at = (NOW - timedelta(days=50)).isoformat()
    result = runner.invoke(app, ["lead", "show", EMAIL, "--json", "--at", at])
    assert result.exit_code == 0, result.output
    view = json.loads(result.output)
    assert {r["rule"] for r in view["score"]["by_rule"]} >= {"pricing_page_visit"}
    assert "demo_requested" not in {r["rule"] for r in view["score"]["by_rule"]}
    assert all(item["at"] <= at for item in view["timeline"])
    assert view["timeline"][-1]["kind"] == "score"  # fit, written when the lead was created


def test_lead_show_errors(lead_with_history: int) -> None:
    missing = runner.invoke(app, ["lead", "show", "nobody@example.com"])
    assert missing.exit_code == 1 and "no lead with email 'nobody@example.com'" in missing.output
    bad = runner.invoke(app, ["lead", "show", EMAIL, "--at", "yesterday"])
    assert bad.exit_code == 1 and "--at 'yesterday': use an ISO time" in bad.output
