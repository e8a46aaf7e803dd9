"""Command output read by scripts: tables keep a row on one line when piped (no terminal,
no COLUMNS), ``--json`` rows, and times shown with their zone."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time
from sqlalchemy import select
from support.funnel import MONDAY, add_lead, behave, lead, make_runtime, use_fixture_folder
from typer.testing import CliRunner, Result

from nurture.cli import app
from nurture.cli.output import show_time
from nurture.db.models import Enrollment, Message
from nurture.db.session import transaction
from nurture.runtime import Runtime

# Longer than an 80-column table cell can hold: folded if the table wraps.
LONG = "alexandra.konstantinopoulou@accounts-payable.a-rather-long-company-name.example"
RAW_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d|\d\d:\d\d:\d\d\.\d+|\+00:00")


@pytest.fixture
def rt(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    use_fixture_folder(monkeypatch)
    monkeypatch.setenv("NURTURE_DATABASE_URL", db_url)
    monkeypatch.delenv("COLUMNS", raising=False)  # as in a pipe: rich would assume 80
    runtime = make_runtime(db_url)
    yield runtime
    runtime.close()


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def line_with(output: str, text: str) -> str:
    found = [line for line in output.splitlines() if text in line]
    assert len(found) == 1, output
    return found[0]


def mql(rt: Runtime, email: str) -> int:
    lead_id = add_lead(rt, email, enrolled=False)
    for n in range(4):
        behave(rt, lead_id, "page_visit", MONDAY + timedelta(seconds=n))
    assert lead(rt, lead_id).lifecycle_stage == "mql"
    return lead_id


def add_message(rt: Runtime, lead_id: int, error: str) -> None:
    with transaction(rt.sessions) as session:
        enrollment = session.scalars(select(Enrollment).where(Enrollment.lead_id == lead_id)).one()
        session.add(
            Message(
                enrollment_id=enrollment.id,
                lead_id=lead_id,
                sequence_key=enrollment.sequence_key,
                sequence_version=enrollment.sequence_version,
                step_id="welcome",
                status="failed",
                to_email=LONG,
                attempts=3,
                error=error,
                created_at=MONDAY,
            )
        )


def test_show_time_names_the_zone() -> None:
    at = datetime(2026, 3, 2, 10, 0, 5, 123456, tzinfo=UTC)
    assert show_time(at) == "2026-03-02 10:00 UTC"
    assert show_time(at.isoformat()) == "2026-03-02 10:00 UTC"
    assert show_time(None) == "" and show_time("") == ""


def test_leads_list_piped_keeps_each_lead_on_one_line(rt: Runtime) -> None:
    add_lead(rt, LONG)

    result = invoke("leads", "list")

    assert result.exit_code == 0, result.output
    row = line_with(result.output, LONG)
    assert "tester" in row and "EST" in row  # next run in the lead's zone (New York)
    as_json = json.loads(invoke("leads", "list", "--json").output)
    assert as_json["total"] == 1
    (listed,) = as_json["leads"]
    assert listed["email"] == LONG and listed["lifecycle_stage"] == "lead"
    assert listed["sequence"] and listed["step"]
    assert datetime.fromisoformat(listed["next_run_at"]).utcoffset() == timedelta(0)


def test_outbox_piped_keeps_each_message_on_one_line(rt: Runtime) -> None:
    lead_id = add_lead(rt, LONG)
    error = "550 5.1.1 mailbox unavailable: the recipient address was rejected by the server"
    add_message(rt, lead_id, error)

    result = invoke("outbox")

    assert result.exit_code == 0, result.output
    row = line_with(result.output, LONG)
    assert error in row and "2026-03-02 10:00 UTC" in row
    (message,) = json.loads(invoke("outbox", "--json").output)["messages"]
    assert (message["to"], message["status"], message["attempts"]) == (LONG, "failed", 3)
    assert message["error"] == error and message["sent_at"] is None
    assert message["created_at"] == "2026-03-02T10:00:00+00:00"


def test_report_sla_piped_keeps_each_handoff_on_one_line(rt: Runtime) -> None:
    mql(rt, LONG)

    with freeze_time(MONDAY + timedelta(hours=2)):
        result = invoke("report", "sla")

    assert result.exit_code == 0, result.output
    row = line_with(result.output, LONG)
    assert "2026-03-02 10:00 UTC" in row  # opened, with its zone
    assert RAW_TIME.search(result.output) is None


def test_sales_status_shows_times_like_the_other_commands(rt: Runtime) -> None:
    mql(rt, "cho@acme.example")
    with freeze_time(MONDAY + timedelta(hours=1, seconds=7, microseconds=250)):
        invoke("sales", "accept", "cho@acme.example", "--actor", "sam")
        assert invoke("sales", "reject", "cho@acme.example", "--reason", "timing").exit_code == 0
        shown = invoke("sales", "status", "cho@acme.example")

    assert shown.exit_code == 0, shown.output
    assert "silent until 2026-04-01" in shown.output and "UTC" in shown.output
    assert RAW_TIME.search(shown.output) is None, shown.output
