"""SLAs of hand-offs in business days: weekends and each lead's country's public holidays
are skipped; a late hand-off is recorded as breached (once) and notified; the report lists
open, met and breached hand-offs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from freezegun import freeze_time
from sqlalchemy import select
from support.funnel import add_lead, behave, funnel, handoffs, make_runtime, use_fixture_folder
from typer.testing import CliRunner

from nurture.cli import app
from nurture.db.models import Lead, WebhookDelivery
from nurture.db.session import transaction
from nurture.funnel.decisions import SalesDecision
from nurture.funnel.sales import apply_decision
from nurture.funnel.sla import sla_report
from nurture.runtime import Runtime
from nurture.sequences.business_days import BusinessCalendar

NEW_YORK, SEOUL = ZoneInfo("America/New_York"), ZoneInfo("Asia/Seoul")
HOOK = "http://127.0.0.1:9/hooks"


def test_business_days_skip_the_weekend_and_the_us_holiday() -> None:
    # Thursday 2 July 2026, 15:00 in New York; Friday 3 July is Independence Day (observed).
    opened = datetime(2026, 7, 2, 15, 0, tzinfo=NEW_YORK)
    us = BusinessCalendar.of("US")
    assert us.add_business_days(opened, 1, NEW_YORK) == datetime(2026, 7, 6, 15, 0, tzinfo=NEW_YORK)
    # Without a calendar only the weekend counts.
    assert BusinessCalendar.of("").add_business_days(opened, 1, NEW_YORK) == datetime(
        2026, 7, 3, 15, 0, tzinfo=NEW_YORK
    )
    assert us.days_off_between(opened, datetime(2026, 7, 6, tzinfo=NEW_YORK), NEW_YORK) == [
        "2026-07-03 Independence Day (observed)",
        "2026-07-04 Independence Day",
        "2026-07-05 weekend",
    ]


def test_business_days_skip_chuseok_for_a_korean_lead() -> None:
    # Wednesday 23 September 2026, 10:00 in Seoul; Chuseok runs Thursday to Saturday.
    opened = datetime(2026, 9, 23, 10, 0, tzinfo=SEOUL)
    due = BusinessCalendar.of("KR").add_business_days(opened, 1, SEOUL)
    assert due == datetime(2026, 9, 28, 10, 0, tzinfo=SEOUL)
    # The same moment in the US calendar: Thursday is a normal business day.
    assert BusinessCalendar.of("US").add_business_days(opened, 1, SEOUL).day == 24
    # Company days off count too.
    company = BusinessCalendar.of("US", ["2026-09-24"])
    assert company.add_business_days(opened, 1, SEOUL).day == 25


@pytest.fixture
def rt(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    use_fixture_folder(monkeypatch)
    monkeypatch.setenv("NURTURE_HANDOFF_WEBHOOK_URLS", HOOK)
    runtime = make_runtime(db_url, handoff_webhook_urls=HOOK)
    yield runtime
    runtime.close()


def _mql(rt: Runtime, email: str, at: datetime, **fields: object) -> int:
    lead_id = add_lead(rt, email, at, enrolled=False, **fields)
    behave(rt, lead_id, "demo_requested", at)  # fast track: to sql, no SLA in the fixture
    return lead_id


def _mql_by_visits(rt: Runtime, email: str, at: datetime, **fields: object) -> int:
    lead_id = add_lead(rt, email, at, enrolled=False, **fields)
    for n in range(4):
        behave(rt, lead_id, "page_visit", at + timedelta(seconds=n))
    return lead_id


def _accept(rt: Runtime, lead_id: int, at: datetime) -> None:
    with transaction(rt.sessions) as session:
        lead = session.get(Lead, lead_id)
        assert lead is not None
        apply_decision(session, lead, SalesDecision(decision="accept", actor="sam"), at, funnel(rt))


def _pass(rt: Runtime, at: datetime) -> None:
    from nurture.jobs.funnel import funnel_pass

    with freeze_time(at):
        funnel_pass(rt, at)


def test_breach_across_a_weekend_and_a_holiday_is_recorded_and_notified(rt: Runtime) -> None:
    opened = datetime(2026, 7, 2, 15, 0, tzinfo=NEW_YORK).astimezone(UTC)
    late = _mql_by_visits(rt, "late@acme.example", opened)
    on_time = _mql_by_visits(rt, "quick@acme.example", opened)
    (handoff,) = handoffs(rt, late)
    due = datetime(2026, 7, 6, 15, 0, 3, tzinfo=NEW_YORK)
    assert handoff.due_at == due.astimezone(UTC)

    _accept(rt, on_time, datetime(2026, 7, 6, 9, 0, tzinfo=NEW_YORK))  # Monday morning: met
    _pass(rt, due - timedelta(minutes=1))
    assert handoffs(rt, late)[0].breached_at is None  # Friday and the weekend do not count
    _pass(rt, due + timedelta(minutes=1))
    _pass(rt, due + timedelta(hours=1))  # recorded once, notified once
    (breached,) = handoffs(rt, late)
    assert breached.breached_at == due.astimezone(UTC) and breached.closed_at is None
    with rt.sessions() as session:
        events = [
            d.event for d in session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id))
        ]
    assert events.count("sla.breached") == 1 and events.count("handoff.mql") == 2

    _accept(rt, late, due + timedelta(hours=2))  # late is still breached once closed
    with rt.sessions() as session:
        report = sla_report(session, due + timedelta(hours=3))
    statuses = {row["lead"]: row["status"] for row in report.rows if row["stage"] == "mql"}
    assert statuses == {"late@acme.example": "breached", "quick@acme.example": "met"}
    totals = report.to_json()["totals"]
    assert totals["breached"] == 1 and totals["met"] == 1
    assert totals["open"] == 2  # the two SALs now wait to be qualified (5 business days)


def test_a_korean_lead_gets_the_korean_calendar(rt: Runtime) -> None:
    opened = datetime(2026, 9, 23, 10, 0, tzinfo=SEOUL).astimezone(UTC)
    kr = _mql_by_visits(rt, "minji@acme.example", opened, country="KR", timezone="Asia/Seoul")
    us = _mql_by_visits(rt, "amy@acme.example", opened, country="", timezone="Asia/Seoul")
    assert handoffs(rt, kr)[0].due_at == datetime(2026, 9, 28, 10, 0, 3, tzinfo=SEOUL)
    # No country: the default calendar of lifecycle.yaml (US), where the 24th is a workday.
    assert handoffs(rt, us)[0].due_at == datetime(2026, 9, 24, 10, 0, 3, tzinfo=SEOUL)


def test_report_sla_command_lists_open_met_and_breached(
    rt: Runtime, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    lead_id = _mql_by_visits(rt, "open@acme.example", opened)
    _accept(rt, _mql_by_visits(rt, "met@acme.example", opened), opened + timedelta(hours=1))
    monkeypatch.setenv("NURTURE_DATABASE_URL", db_url)
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    with freeze_time(opened + timedelta(hours=2)):
        result = runner.invoke(app, ["report", "sla", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["totals"] == {"open": 2, "met": 1, "breached": 0}
    by_lead = {(r["lead"], r["stage"]): r["status"] for r in report["handoffs"]}
    assert by_lead[("open@acme.example", "mql")] == "open"
    assert by_lead[("met@acme.example", "mql")] == "met"
    with freeze_time(opened + timedelta(days=3)):  # Thursday: the open MQL is past due
        text = runner.invoke(app, ["report", "sla", "--status", "breached"])
    assert text.exit_code == 0, text.output
    assert "open@acme.example" in text.output and "1 breached" in text.output
    assert handoffs(rt, lead_id)[0].breached_at is None  # a report records nothing
