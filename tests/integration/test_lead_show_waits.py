"""`nurture lead show` says why the next step waits (the send window, a wait step) and,
out of every sequence, why the lead is in none now (the re-entry cool-down)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from support.engine import MONDAY, SEQUENCES, TEMPLATES, add_lead, tick_at
from typer.testing import CliRunner

from nurture.cli import app
from nurture.db.models import Enrollment
from nurture.db.session import transaction
from nurture.runtime import Runtime

runner = CliRunner()


def show(rt: Runtime, monkeypatch: pytest.MonkeyPatch, at: str) -> dict[str, object]:
    monkeypatch.setenv("NURTURE_DATABASE_URL", rt.settings.database_url)
    monkeypatch.setenv("NURTURE_SEQUENCES_DIR", str(SEQUENCES))
    monkeypatch.setenv("NURTURE_TEMPLATES_DIR", str(TEMPLATES))
    result = runner.invoke(app, ["lead", "show", "ana@acme.example", "--json", "--at", at])
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads(result.output)
    return data


def test_lead_show_says_why_the_next_step_waits(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    evening = MONDAY + timedelta(hours=8)  # 18:00 UTC: the 09:00-17:00 window is closed
    add_lead(rt, "ana@acme.example", evening)
    tick_at(rt, evening)
    shown = show(rt, monkeypatch, (evening + timedelta(minutes=1)).isoformat())
    (enrollment,) = shown["enrollments"]  # type: ignore[misc]
    assert enrollment["waiting"] == "outside the send window until 2026-03-03 09:00 UTC"

    tick_at(rt, MONDAY + timedelta(days=1))  # Tuesday 10:00: the welcome goes out
    shown = show(rt, monkeypatch, (MONDAY + timedelta(days=1, hours=1)).isoformat())
    (enrollment,) = shown["enrollments"]  # type: ignore[misc]
    assert enrollment["waiting"] == "a wait of 3d until 2026-03-06 10:00 UTC"


def test_lead_show_says_why_a_lead_is_in_no_sequence(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_lead(rt, "ana@acme.example")
    with transaction(rt.sessions) as session:
        enrollment = session.query(Enrollment).one()
        enrollment.status, enrollment.exited_at = "completed", MONDAY
        enrollment.next_run_at = None
    shown = show(rt, monkeypatch, (MONDAY + timedelta(days=1)).isoformat())
    assert shown["not_enrolled"] == (
        "in cool-down for drip until 2026-04-01 10:00 UTC (30d after its last exit)"
    )
    at = (MONDAY + timedelta(days=1)).isoformat()
    result = runner.invoke(app, ["lead", "show", "ana@acme.example", "--at", at])
    assert "not in a sequence now: in cool-down for drip until 2026-04-01" in result.output
