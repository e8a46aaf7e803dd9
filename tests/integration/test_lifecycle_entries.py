"""Stages set by a CSV import or the API's lead upsert go through the funnel: a new lead's
first stage is recorded (from none), a different stage on an existing lead is a move the
state machine must allow (recorded, hand-offs opened, sequences exited), and a refused
move refuses the whole row (import) or the whole request (API, 422 naming the field).
The import also brings the fit part of the score up to date for every lead it touches."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from support.funnel import (
    MONDAY,
    active_enrollments,
    add_lead,
    handoffs,
    history,
    lead,
    make_runtime,
    use_fixture_folder,
)
from support.web import API_KEY, AUTH, Clock, client_for

from nurture.db.models import Lead, ScoreEntry
from nurture.leads.importer import ImportReport, RowError, import_leads
from nurture.runtime import Runtime

LATER = MONDAY + timedelta(hours=3)


@pytest.fixture
def rt(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    use_fixture_folder(monkeypatch)
    runtime = make_runtime(db_url, api_keys=API_KEY)
    yield runtime
    runtime.close()


def run_import(rt: Runtime, tmp_path: Path, text: str) -> ImportReport:
    path = tmp_path / "leads.csv"
    path.write_text(text, encoding="utf-8")
    return import_leads(path, rt.sessions, rt.funnel(), now=LATER)


def lead_id(rt: Runtime, email: str) -> int:
    with rt.sessions() as session:
        found = session.scalar(select(Lead.id).where(Lead.email == email))
    assert found is not None, email
    return found


def fit_entries(rt: Runtime, lead: int) -> list[tuple[str, float]]:
    with rt.sessions() as session:
        query = select(ScoreEntry).where(ScoreEntry.lead_id == lead, ScoreEntry.category == "fit")
        return [(e.rule, e.points) for e in session.scalars(query.order_by(ScoreEntry.id))]


def test_an_import_records_each_new_leads_first_stage(rt: Runtime, tmp_path: Path) -> None:
    report = run_import(
        rt,
        tmp_path,
        "email,first_name,title,persona,lifecycle_stage\n"
        "ana@acme.example,Ana,Director of Finance,tester,subscriber\n"
        "bo@acme.example,Bo,Clerk,tester,\n",
    )
    assert (report.created, report.skipped) == (2, 0)
    ana, bo = lead_id(rt, "ana@acme.example"), lead_id(rt, "bo@acme.example")
    (entry,) = history(rt, ana)
    assert (entry.from_stage, entry.to_stage, entry.reason_kind, entry.actor) == (
        "",
        "subscriber",
        "import",
        "import",
    )
    assert entry.at == LATER and entry.score == 20.0  # its fit, scored before the entry
    assert entry.data["source"] == "import"
    assert [(c.from_stage, c.to_stage) for c in history(rt, bo)] == [("", "lead")]
    # An entry records; it alerts nobody and leaves the stage's clock alone.
    assert handoffs(rt, ana) == [] and lead(rt, ana).stage_changed_at is None


def test_an_import_moves_existing_leads_through_the_funnel(rt: Runtime, tmp_path: Path) -> None:
    ana = add_lead(rt, "ana@acme.example")
    assert len(active_enrollments(rt, ana)) == 1
    report = run_import(
        rt,
        tmp_path,
        "email,lifecycle_stage\nana@acme.example,mql\nANA@acme.example,sal\n",
    )
    assert (report.updated, report.skipped, report.errors) == (2, 0, [])
    moves = [(c.from_stage, c.to_stage, c.reason_kind, c.reason_detail) for c in history(rt, ana)]
    assert moves == [
        ("lead", "mql", "import", "CSV import, row 2"),
        ("mql", "sal", "import", "CSV import, row 3"),
    ]
    assert lead(rt, ana).lifecycle_stage == "sal"
    assert active_enrollments(rt, ana) == []  # reaching MQL ended the nurture track
    assert [(h.stage, h.outcome) for h in handoffs(rt, ana)] == [("mql", "sal"), ("sal", "")]


def test_an_import_skips_a_row_whose_move_is_refused(rt: Runtime, tmp_path: Path) -> None:
    ana = add_lead(rt, "ana@acme.example", first_name="Ana")
    report = run_import(
        rt,
        tmp_path,
        "email,first_name,lifecycle_stage\n"
        "bo@acme.example,Bo,lead\n"
        "ana@acme.example,Anna,customer\n"
        "ana@acme.example,Anne,\n",
    )
    assert (report.rows, report.created, report.updated, report.skipped) == (3, 1, 1, 1)
    assert report.errors == [
        RowError(
            3,
            "lifecycle_stage",
            "cannot move from lead to customer (from lead: mql, sql, disqualified); row skipped",
        )
    ]
    # Nothing of row 3 was applied; row 4 was.
    assert (lead(rt, ana).first_name, lead(rt, ana).lifecycle_stage) == ("Anne", "lead")
    assert history(rt, ana) == []


def test_an_import_brings_the_fit_score_up_to_date(rt: Runtime, tmp_path: Path) -> None:
    run_import(rt, tmp_path, "email,title,persona\nana@acme.example,VP Finance,tester\n")
    ana = lead_id(rt, "ana@acme.example")
    assert fit_entries(rt, ana) == [("decision_maker", 20.0)]
    report = run_import(rt, tmp_path, "email,title\nana@acme.example,Clerk\n")
    assert report.updated == 1
    assert fit_entries(rt, ana) == [("decision_maker", 20.0), ("decision_maker", -20.0)]


def test_the_api_upsert_moves_the_stage_through_the_funnel(rt: Runtime) -> None:
    with client_for(rt, Clock(LATER)) as client:
        body = {"email": "ana@acme.example", "persona": "tester", "title": "VP Sales"}
        created = client.post("/api/v1/leads", json=body, headers=AUTH)
        assert created.status_code == 201
        ana = created.json()["lead"]["id"]
        moved = client.post(
            "/api/v1/leads",
            json={"email": "ana@acme.example", "lifecycle_stage": "mql"},
            headers=AUTH,
        )
        assert moved.status_code == 200 and moved.json()["lead"]["lifecycle_stage"] == "mql"
        refused = client.post(
            "/api/v1/leads",
            json={"email": "ana@acme.example", "title": "CEO", "lifecycle_stage": "customer"},
            headers=AUTH,
        )
    assert refused.status_code == 409  # a valid body the lead's stage cannot take
    (error,) = refused.json()["detail"]
    assert error["loc"] == ["body", "lifecycle_stage"] and error["field"] == "lifecycle_stage"
    assert error["msg"].startswith("cannot move from mql to customer")
    found = lead(rt, ana)
    assert (found.title, found.lifecycle_stage) == ("VP Sales", "mql")  # nothing changed
    changes = [(c.from_stage, c.to_stage, c.reason_kind, c.actor) for c in history(rt, ana)]
    assert changes == [("", "lead", "api", "api"), ("lead", "mql", "api", "api")]
    assert history(rt, ana)[0].score == 20.0
    assert [h.stage for h in handoffs(rt, ana)] == ["mql"]
