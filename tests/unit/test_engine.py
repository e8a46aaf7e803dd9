"""The sequence engine's decisions: pure, with explicit ``now`` (frozen time)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from freezegun import freeze_time

from nurture.core.conditions import Activity
from nurture.sequences.caps import FrequencyCap
from nurture.sequences.engine import (
    Complete,
    Context,
    Defer,
    Exit,
    MoveToStage,
    Position,
    SendEmail,
    WaitUntil,
    decide,
)
from nurture.sequences.spec import SequenceSpec

SEQUENCE = """
key: it-awareness
name: IT awareness
audience: {personas: [it_director], journey_stages: [awareness]}
entry: {policy: again, cooldown: 90d}
send_window: {days: [mon, tue, wed, thu, fri], hours: "09:00-17:00"}
exit: {lifecycle_stages: [mql], events: [demo_requested]}
steps:
  - id: welcome
    email:
      template: it/welcome
      subject: "Hello {{ lead.first_name }}"
      locales: {ko: {subject: "안녕하세요"}}
  - id: pause
    wait: 2 business days
  - id: engaged
    branch:
      if: {clicked: welcome}
      then: graduate
  - id: big-company
    branch:
      if: {attribute: company_size, gte: 500}
      then: case-study
      else: nudge
  - id: nudge
    email: {template: it/nudge, subject: "Still there?"}
  - id: done
    exit: "no engagement"
  - id: case-study
    email: {template: it/case, subject: "How Acme did it"}
  - id: graduate
    move_to_stage: consideration
"""
SPEC = SequenceSpec.model_validate(yaml.safe_load(SEQUENCE))
ENTERED = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
SEOUL_LEAD = {
    "email": "minji@example.com",
    "first_name": "Minji",
    "timezone": "Asia/Seoul",
    "locale": "ko-KR",
    "lifecycle_stage": "lead",
    "company_size": 1200,
    "attributes": {},
}


def ctx(**changes: Any) -> Context:
    lead = {**SEOUL_LEAD, **changes.pop("lead", {})}
    return Context(lead=lead, **changes)


def at(step: str) -> Position:
    return Position(step, ENTERED)


def test_email_inside_the_window_is_sent_in_the_leads_locale() -> None:
    # Monday 10:00 in Seoul is 01:00 UTC.
    now = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
    decision = decide(SPEC, at("welcome"), ctx(), now)
    assert decision == SendEmail("welcome", "it/welcome", "안녕하세요", "ko-KR", "pause")


def test_email_outside_the_window_is_deferred_to_the_next_opening_in_the_leads_zone() -> None:
    # Friday 18:00 in Seoul: the window reopens Monday 09:00 Seoul = Monday 00:00 UTC.
    now = datetime(2026, 3, 6, 9, 0, tzinfo=UTC)
    decision = decide(SPEC, at("welcome"), ctx(), now)
    assert decision == Defer("welcome", datetime(2026, 3, 9, 0, 0, tzinfo=UTC), "window")


def test_same_instant_different_zones_decide_differently() -> None:
    now = datetime(2026, 3, 3, 15, 0, tzinfo=UTC)  # Tue 00:00 Seoul, Tue 10:00 New York
    seoul = decide(SPEC, at("welcome"), ctx(), now)
    new_york = decide(SPEC, at("welcome"), ctx(lead={"timezone": "America/New_York"}), now)
    assert isinstance(seoul, Defer) and seoul.run_at == datetime(2026, 3, 4, 0, 0, tzinfo=UTC)
    assert isinstance(new_york, SendEmail)


def test_lead_without_zone_uses_the_configured_default() -> None:
    now = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # Monday 10:00 UTC, 19:00 Seoul
    lead = {"timezone": ""}
    assert isinstance(decide(SPEC, at("welcome"), ctx(lead=lead), now), SendEmail)
    deferred = decide(SPEC, at("welcome"), ctx(lead=lead, default_timezone="Asia/Seoul"), now)
    assert isinstance(deferred, Defer)


def test_locale_falls_back_to_the_default_subject() -> None:
    now = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
    decision = decide(SPEC, at("welcome"), ctx(lead={"locale": "ja"}), now)
    assert isinstance(decision, SendEmail) and decision.subject == "Hello {{ lead.first_name }}"


def test_business_day_wait_skips_the_weekend_in_the_leads_zone() -> None:
    # Thursday 11:00 Seoul + 2 business days = Monday 11:00 Seoul (02:00 UTC).
    now = datetime(2026, 3, 5, 2, 0, tzinfo=UTC)
    decision = decide(SPEC, at("pause"), ctx(), now)
    assert decision == WaitUntil("engaged", datetime(2026, 3, 9, 2, 0, tzinfo=UTC))


def test_branch_on_click_graduates_the_lead() -> None:
    now = datetime(2026, 3, 9, 2, 0, tzinfo=UTC)
    clicked = Activity(clicked_steps=frozenset({"welcome"}))
    assert decide(SPEC, at("engaged"), ctx(activity=clicked), now) == MoveToStage(
        "graduate", "consideration"
    )


def test_branch_on_attribute_without_click() -> None:
    now = datetime(2026, 3, 9, 2, 0, tzinfo=UTC)
    big = decide(SPEC, at("engaged"), ctx(), now)
    small = decide(SPEC, at("engaged"), ctx(lead={"company_size": 40}), now)
    unknown = decide(SPEC, at("engaged"), ctx(lead={"company_size": None}), now)
    assert isinstance(big, SendEmail) and big.step_id == "case-study"
    assert isinstance(small, SendEmail) and small.step_id == "nudge"
    assert isinstance(unknown, SendEmail) and unknown.step_id == "nudge"


def test_exit_step_and_end_of_sequence() -> None:
    now = datetime(2026, 3, 9, 2, 0, tzinfo=UTC)
    assert decide(SPEC, at("done"), ctx(), now) == Exit("done", "no engagement")
    assert decide(SPEC, at("__end__"), ctx(), now) == Complete("__end__")


def test_goals_exit_before_anything_is_sent() -> None:
    now = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
    mql = decide(SPEC, at("welcome"), ctx(lead={"lifecycle_stage": "mql"}), now)
    assert mql == Exit("welcome", "goal reached: lifecycle stage mql")
    demo = Activity(events=(("demo_requested", ENTERED + timedelta(hours=1)),))
    assert decide(SPEC, at("welcome"), ctx(activity=demo), now) == Exit(
        "welcome", "goal reached: demo_requested"
    )
    # A demo request from before this enrollment is not this enrollment's goal.
    old = Activity(events=(("demo_requested", ENTERED - timedelta(days=30)),))
    assert isinstance(decide(SPEC, at("welcome"), ctx(activity=old), now), SendEmail)


def test_suppressed_and_out_of_audience_leads_leave() -> None:
    now = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
    assert decide(SPEC, at("welcome"), ctx(suppressed="unsubscribed"), now) == Exit(
        "welcome", "suppressed: unsubscribed"
    )
    sal = decide(SPEC, at("welcome"), ctx(lead={"lifecycle_stage": "sal"}), now)
    assert sal == Exit("welcome", "left the audience: lifecycle stage sal")


def test_frequency_cap_defers_to_the_first_allowed_moment_never_drops() -> None:
    now = datetime(2026, 3, 4, 1, 0, tzinfo=UTC)  # Wednesday 10:00 Seoul
    sends = (now - timedelta(days=6), now - timedelta(days=2), now - timedelta(days=1))
    decision = decide(SPEC, at("welcome"), ctx(recent_sends=sends), now)
    # The oldest send ages out of the 7-day window on Thursday 10:00 Seoul: inside the window.
    assert decision == Defer("welcome", now + timedelta(days=1), "cap")


def test_cap_release_outside_the_window_waits_for_the_window_too() -> None:
    now = datetime(2026, 3, 4, 1, 0, tzinfo=UTC)  # Wednesday 10:00 Seoul
    # Oldest send ages out Friday 20:00 Seoul: after hours, so Monday 09:00 Seoul.
    sends = (datetime(2026, 2, 27, 11, 0, tzinfo=UTC), now - timedelta(hours=3), now)
    decision = decide(SPEC, at("welcome"), ctx(recent_sends=sends), now)
    assert decision == Defer("welcome", datetime(2026, 3, 9, 0, 0, tzinfo=UTC), "window")


def test_a_looping_branch_without_wait_is_stopped() -> None:
    looping = SequenceSpec.model_validate(
        {
            "key": "loop",
            "name": "loop",
            "audience": {"personas": ["x"], "journey_stages": ["awareness"]},
            "steps": [{"id": "a", "branch": {"if": {"opened": "a"}, "then": "a", "else": "a"}}],
        }
    )
    decision = decide(looping, Position("a", ENTERED), ctx(), ENTERED)
    assert isinstance(decision, Exit) and "loop" in decision.reason


@freeze_time("2026-03-29 00:30:00", tz_offset=0)
def test_dst_spring_forward_in_berlin_with_frozen_clock() -> None:
    # On 2026-03-29 Berlin skips 02:00-03:00. A 02:30 window start opens at 03:00 CEST.
    spec = SPEC.model_copy(
        update={
            "send_window": SPEC.send_window.model_copy(  # type: ignore[union-attr]
                update={"days": ["sun"], "hours": "02:30-04:00"}
            )
        }
    )
    now = datetime.now(UTC)
    decision = decide(spec, at("welcome"), ctx(lead={"timezone": "Europe/Berlin"}), now)
    assert decision == Defer("welcome", datetime(2026, 3, 29, 1, 0, tzinfo=UTC), "window")


@pytest.mark.parametrize("zone", ["America/New_York", "Europe/Berlin", "Australia/Sydney"])
def test_deferral_always_lands_inside_the_window(zone: str) -> None:
    start = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    for hour in range(0, 24 * 14, 5):
        now = start + timedelta(hours=hour)
        decision = decide(SPEC, at("welcome"), ctx(lead={"timezone": zone}), now)
        if isinstance(decision, Defer):
            again = decide(SPEC, at("welcome"), ctx(lead={"timezone": zone}), decision.run_at)
            assert isinstance(again, SendEmail), (zone, now)


def test_cap_settings_are_respected() -> None:
    now = datetime(2026, 3, 4, 1, 0, tzinfo=UTC)
    sends = (now - timedelta(hours=1),)
    strict = FrequencyCap(1, timedelta(days=1))
    decision = decide(SPEC, at("welcome"), ctx(recent_sends=sends, cap=strict), now)
    assert decision == Defer("welcome", now + timedelta(hours=23), "cap")


def test_expression_conditions_run_in_the_sandbox() -> None:
    from nurture.authoring.expressions import SandboxExpressions
    from nurture.core.conditions import Condition, holds

    lead = {**SEOUL_LEAD, "attributes": {"erp": "SAP"}}
    now = ENTERED
    sandbox = SandboxExpressions()
    assert holds(Condition(expr="lead.company_size >= 1000"), lead, Activity(), now, sandbox)
    assert holds(Condition(expr="lead.attributes.erp == 'SAP'"), lead, Activity(), now, sandbox)
    # A failing expression is "no match", and internals stay out of reach.
    assert not holds(Condition(expr="lead.missing > 3"), lead, Activity(), now, sandbox)
    assert not holds(Condition(expr="lead.__class__.__mro__"), lead, Activity(), now, sandbox)
