"""Full funnel journeys on a real database under frozen time: events go through the real
pipeline (scoring, then the funnel), the engine ticks, sales decide."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from support.funnel import (
    MONDAY,
    active_enrollments,
    add_lead,
    behave,
    funnel,
    handoffs,
    history,
    lead,
    make_runtime,
    path,
    sent_steps,
    tick_at,
    use_fixture_folder,
)

from nurture.db.models import Enrollment, Lead, ScoreEntry, StageChange, WebhookDelivery
from nurture.db.session import transaction
from nurture.funnel.decisions import Bant, SalesDecision
from nurture.funnel.machine import Reason, ReasonKind, TransitionRefused
from nurture.funnel.sales import apply_decision
from nurture.funnel.stages import change_stage
from nurture.funnel.status import lead_status
from nurture.runtime import Runtime
from nurture.scoring.scores import lead_score
from nurture.sequences.enrollment import enroll

HOOK = "http://127.0.0.1:9/hooks/handoff"  # nothing listens on the discard port


@pytest.fixture
def rt(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    use_fixture_folder(monkeypatch)
    monkeypatch.setenv("NURTURE_HANDOFF_WEBHOOK_URLS", HOOK)
    runtime = make_runtime(db_url, handoff_webhook_urls=HOOK)
    yield runtime
    runtime.close()


def visits(rt: Runtime, lead_id: int, count: int, start: datetime = MONDAY) -> None:
    """``count`` case-study visits a minute apart (a minute of decay is below a cent)."""
    for n in range(count):
        url, title = f"https://acme.example/case-study-{n}", f"Case study {n}"
        behave(rt, lead_id, "page_visit", start + timedelta(minutes=n + 1), url=url, title=title)


def decide(rt: Runtime, lead_id: int, at: datetime, **fields: Any) -> StageChange:
    with transaction(rt.sessions) as session:
        found = session.get(Lead, lead_id)
        assert found is not None
        return apply_decision(session, found, SalesDecision(**fields), at, funnel(rt))


def test_lead_becomes_mql_by_score_and_is_handed_off_with_context(rt: Runtime) -> None:
    lead_id = add_lead(rt, "ana@acme.example")
    tick_at(rt, MONDAY)
    assert sent_steps(rt, lead_id) == ["nurture/welcome"]

    visits(rt, lead_id, 3)  # fit 20 + 30: below 60
    assert lead(rt, lead_id).lifecycle_stage == "lead"
    visits(rt, lead_id, 1, MONDAY + timedelta(minutes=5))  # 60, and a decision maker
    assert lead(rt, lead_id).lifecycle_stage == "mql"

    (change,) = history(rt, lead_id)
    assert (change.from_stage, change.to_stage, change.reason_kind) == ("lead", "mql", "rule")
    assert change.score == 60.0 and change.actor == "nurture"
    assert "engaged-decision-maker" in change.reason_detail
    assert change.data["score"]["by_rule"] == {"decision_maker": 20.0, "page_visit": 40.0}
    # Reaching MQL exits the nurture track at once, not at its next step.
    assert active_enrollments(rt, lead_id) == []
    (handoff,) = handoffs(rt, lead_id)
    assert (handoff.kind, handoff.stage, handoff.owner) == ("mql", "mql", "sales-team")
    # 1 business day in New York: Monday 06:01 EST -> Tuesday 06:01 EST.
    assert handoff.due_at == change.at + timedelta(days=1)
    with rt.sessions() as session:
        (delivery,) = session.scalars(select(WebhookDelivery))
    document = delivery.payload
    assert (delivery.event, delivery.target_url, delivery.status) == (
        "handoff.mql",
        HOOK,
        "pending",
    )
    assert document["why"]["rules"] == ["engaged-decision-maker"]
    assert document["why"]["score"]["total"] == 60.0
    assert document["engaged_content"][0] == {
        "type": "page_visit",
        "at": (MONDAY + timedelta(minutes=6)).isoformat(),
        "title": "Case study 0",
        "url": "https://acme.example/case-study-0",
    }
    assert [m["step"] for m in document["messages"]] == ["welcome"]
    assert [(h["from"], h["to"]) for h in document["stage_history"]] == [("lead", "mql")]
    assert document["lead"]["email"] == "ana@acme.example"
    # Two days later the nurture follow-up is not sent: the lead belongs to sales now.
    tick_at(rt, MONDAY + timedelta(days=3))
    assert sent_steps(rt, lead_id) == ["nurture/welcome"]


def test_compound_rule_needs_the_decision_maker(rt: Runtime) -> None:
    analyst = add_lead(rt, "ben@acme.example", title="Analyst")
    visits(rt, analyst, 7)  # 70 points of engagement, no decision maker
    assert lead(rt, analyst).lifecycle_stage == "lead"
    with rt.sessions() as session:
        status = lead_status(session, lead(rt, analyst), MONDAY + timedelta(minutes=8), funnel(rt))
    rules = {r["name"]: r for r in status["assessment"]["mql_rules"]}
    assert rules["engaged-decision-maker"]["holds"] is False
    assert "fit decision_maker missing" in rules["engaged-decision-maker"]["why"]
    visits(rt, analyst, 3, MONDAY + timedelta(minutes=10))  # 100: the second rule holds
    assert lead(rt, analyst).lifecycle_stage == "mql"
    assert "very-engaged" in history(rt, analyst)[-1].reason_detail


def test_fast_track_to_sql_below_the_threshold(rt: Runtime) -> None:
    lead_id = add_lead(rt, "cho@acme.example", title="Analyst")
    behave(rt, lead_id, "demo_requested", MONDAY + timedelta(minutes=5))
    assert lead(rt, lead_id).lifecycle_stage == "sql"
    (change,) = history(rt, lead_id)
    assert change.reason_kind == "trigger" and change.score == 0.0
    assert "demo-request" in change.reason_detail
    (handoff,) = handoffs(rt, lead_id)
    assert (handoff.kind, handoff.priority) == ("fast_track", "hot")
    assert active_enrollments(rt, lead_id) == []


def test_pricing_views_within_the_window_make_a_hot_mql(rt: Runtime) -> None:
    slow = add_lead(rt, "dan@acme.example", title="Analyst")
    for day in (0, 4, 8):  # three views, but never three within 7 days
        behave(rt, slow, "pricing_page_view", MONDAY + timedelta(days=day))
    assert lead(rt, slow).lifecycle_stage == "lead"
    behave(rt, slow, "pricing_page_view", MONDAY + timedelta(days=9))
    assert lead(rt, slow).lifecycle_stage == "mql"
    (handoff,) = handoffs(rt, slow)
    assert (handoff.kind, handoff.priority) == ("fast_track", "hot")
    assert history(rt, slow)[-1].score < 20  # four decayed views: the trigger did it


def test_a_lead_outside_the_icp_never_becomes_mql(rt: Runtime) -> None:
    solo = add_lead(rt, "eve@solo.example", company_size=3)
    rival = add_lead(rt, "fay@rival.example")
    for lead_id in (solo, rival):
        visits(rt, lead_id, 12)  # 140 points
        behave(rt, lead_id, "demo_requested", MONDAY + timedelta(minutes=20))
        assert lead(rt, lead_id).lifecycle_stage == "lead"
        assert history(rt, lead_id) == []
    with rt.sessions() as session:
        status = lead_status(session, lead(rt, solo), MONDAY + timedelta(minutes=13), funnel(rt))
    assert status["score"]["total"] == 140.0
    assert status["assessment"]["excluded"] == [
        {"name": "sole-trader", "reason": "sole trader: under 10 employees"}
    ]
    assert status["assessment"]["why_not"] == "excluded: sole trader: under 10 employees"


def test_reject_recycles_silently_then_renurtures_and_the_lead_comes_back(rt: Runtime) -> None:
    lead_id = add_lead(rt, "gus@acme.example")
    tick_at(rt, MONDAY)
    visits(rt, lead_id, 4)
    assert lead(rt, lead_id).lifecycle_stage == "mql"
    accepted_at = MONDAY + timedelta(hours=2)
    decide(rt, lead_id, accepted_at, decision="accept", actor="sam@sales.example")
    assert lead(rt, lead_id).owner == "sam@sales.example"
    rejected_at = MONDAY + timedelta(hours=3)
    decide(
        rt,
        lead_id,
        rejected_at,
        decision="reject",
        reason_code="timing",
        note="budget cycle starts in Q3",
        actor="sam@sales.example",
    )
    recycled = lead(rt, lead_id)
    assert recycled.lifecycle_stage == "recycled"
    assert recycled.recycle_until == rejected_at + timedelta(days=30)
    # The engagement score is reset with one ledger entry; the ledger still sums exactly.
    with rt.sessions() as session:
        entry = session.scalar(select(ScoreEntry).where(ScoreEntry.rule == "recycle:reset"))
        assert entry is not None
        score = lead_score(
            session, lead_id, rejected_at + timedelta(days=10), rules=rt.program.scoring
        )
    engagement_then = history(rt, lead_id)[-1].data["score"]["engagement"]
    assert 39.9 < engagement_then < 40 and entry.points == -engagement_then
    assert score.total == 20.0 and score.engagement == 0.0
    assert sum(score.by_rule.values()) == score.total

    for day in (1, 7, 14, 29):  # the cool-down: nothing is sent
        tick_at(rt, rejected_at + timedelta(days=day))
    assert sent_steps(rt, lead_id) == ["nurture/welcome"]
    assert active_enrollments(rt, lead_id) == []

    ended = rejected_at + timedelta(days=30, hours=1)
    tick_at(rt, ended)  # the cool-down is over: the reason's re-nurture sequence starts
    assert sent_steps(rt, lead_id) == ["nurture/welcome", "renurture/comeback"]
    assert lead(rt, lead_id).lifecycle_stage == "recycled"
    assert lead(rt, lead_id).recycle_until is None

    visits(rt, lead_id, 5, ended + timedelta(days=1))  # fit 20 + 50 (old engagement reset)
    assert lead(rt, lead_id).lifecycle_stage == "mql"
    assert active_enrollments(rt, lead_id) == []  # re-nurture's goal reached
    assert path(rt, lead_id) == ["lead", "mql", "sal", "recycled", "mql"]
    assert [c.cycle for c in history(rt, lead_id)] == [1, 1, 1, 2]
    assert lead(rt, lead_id).cycle == 2
    rejection = history(rt, lead_id)[2]
    assert rejection.data["reason_code"] == "timing"
    assert rejection.data["note"] == "budget cycle starts in Q3"
    assert [h.cycle for h in handoffs(rt, lead_id)] == [1, 1, 2]


def test_reject_without_a_sequence_goes_back_to_the_persona_track(rt: Runtime) -> None:
    lead_id = add_lead(rt, "hal@acme.example")
    visits(rt, lead_id, 4)
    decide(rt, lead_id, MONDAY + timedelta(hours=2), decision="reject", reason_code="no_budget")
    with rt.sessions() as session:
        entry = session.scalar(
            select(ScoreEntry).where(
                ScoreEntry.lead_id == lead_id, ScoreEntry.rule.like("recycle:%")
            )
        )
    engagement_then = history(rt, lead_id)[-1].data["score"]["engagement"]
    assert entry is not None and entry.rule == "recycle:keep-0.5"
    assert entry.points == -round(engagement_then / 2, 2)
    tick_at(rt, MONDAY + timedelta(days=61))
    assert path(rt, lead_id) == ["lead", "mql", "recycled", "lead"]
    assert history(rt, lead_id)[-1].reason_kind == "system"
    assert [e.sequence_key for e in active_enrollments(rt, lead_id)] == ["nurture"]


def test_disqualify_stops_every_sequence_at_once(rt: Runtime) -> None:
    lead_id = add_lead(rt, "ida@acme.example")
    tick_at(rt, MONDAY)
    due = MONDAY + timedelta(days=2)  # the follow-up is due now
    with transaction(rt.sessions) as session:
        found = session.get(Lead, lead_id)
        assert found is not None
        change_stage(
            session,
            found,
            "disqualified",
            Reason(ReasonKind.sales, "competitor"),
            "sam@sales.example",
            due + timedelta(minutes=1),
            funnel=funnel(rt),
        )
    tick_at(rt, due + timedelta(minutes=2))
    assert sent_steps(rt, lead_id) == ["nurture/welcome"]
    with rt.sessions() as session:
        (enrollment,) = session.scalars(select(Enrollment).where(Enrollment.lead_id == lead_id))
        assert enrollment.status == "exited"
        assert enrollment.exit_reason == "disqualified: every sequence stops"
        found = session.get(Lead, lead_id)
        assert found is not None
        # Never re-enrolled, and no automatic promotion either.
        assert enroll(session, found, rt.catalog, due + timedelta(days=9)) is None
    behave(rt, lead_id, "demo_requested", due + timedelta(days=1))
    assert lead(rt, lead_id).lifecycle_stage == "disqualified"


def test_disallowed_transitions_are_refused_and_change_nothing(rt: Runtime) -> None:
    lead_id = add_lead(rt, "jo@acme.example")
    with pytest.raises(TransitionRefused, match="cannot move from lead to sal"):
        decide(rt, lead_id, MONDAY, decision="accept")
    with pytest.raises(TransitionRefused, match="from lead: mql, sql, disqualified"):
        decide(rt, lead_id, MONDAY, decision="customer")
    assert lead(rt, lead_id).lifecycle_stage == "lead"
    assert lead(rt, lead_id).owner == ""
    assert history(rt, lead_id) == [] and handoffs(rt, lead_id) == []
    assert len(active_enrollments(rt, lead_id)) == 1

    behave(rt, lead_id, "demo_requested", MONDAY + timedelta(minutes=1))  # -> sql
    bant = Bant(budget="50k", authority="CFO", need="AP backlog", timeline="Q3")
    decide(rt, lead_id, MONDAY + timedelta(hours=1), decision="opportunity")
    decide(rt, lead_id, MONDAY + timedelta(hours=2), decision="customer")
    with pytest.raises(TransitionRefused, match="customer is final"):
        decide(rt, lead_id, MONDAY + timedelta(hours=3), decision="qualify", bant=bant)
    with rt.sessions() as session:
        count = session.scalar(select(func.count()).select_from(StageChange))
    assert count == 3
    assert path(rt, lead_id) == ["lead", "sql", "opportunity", "customer"]
