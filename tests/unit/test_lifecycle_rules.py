"""The pure parts of the funnel: the state machine, the rules of lifecycle.yaml, webhook
signatures, and ``nurture validate`` on lifecycle files (file:line problems)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support import REPO
from support.funnel import FIXTURES, SEQUENCES, TEMPLATES
from typer.testing import CliRunner

from nurture.cli import app
from nurture.funnel.loading import load_lifecycle, load_lifecycle_file
from nurture.funnel.machine import (
    ALLOWED,
    TERMINAL,
    Reason,
    ReasonKind,
    Refusal,
    Stage,
    Transition,
    transition,
)
from nurture.funnel.rules import ScoreView, assess, may_promote
from nurture.funnel.signing import signed_headers, verify

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
RULE = Reason(ReasonKind.rule, "score")
SPEC = load_lifecycle(SEQUENCES)
assert SPEC is not None


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("subscriber", "lead"),
        ("lead", "mql"),
        ("lead", "sql"),
        ("mql", "sal"),
        ("mql", "recycled"),
        ("sal", "sql"),
        ("sal", "recycled"),
        ("sql", "opportunity"),
        ("sql", "recycled"),
        ("opportunity", "customer"),
        ("opportunity", "recycled"),
        ("recycled", "lead"),
        ("recycled", "mql"),
        ("recycled", "sql"),
    ],
)
def test_allowed_transitions(current: str, target: str) -> None:
    moved = transition(current, target, RULE, NOW)
    assert moved == Transition(Stage(current), Stage(target), RULE, NOW)


def test_every_stage_but_the_final_ones_may_be_disqualified() -> None:
    assert {Stage.customer, Stage.disqualified} == TERMINAL
    for stage in Stage:
        result = transition(stage.value, "disqualified", RULE, NOW)
        assert isinstance(result, Transition) is (stage not in TERMINAL)
    assert all(stage in ALLOWED for stage in Stage)


@pytest.mark.parametrize(
    ("current", "target", "message"),
    [
        ("lead", "sal", "cannot move from lead to sal (from lead: mql, sql, disqualified)"),
        ("mql", "customer", "cannot move from mql to customer (from mql: sal, sql, recycled, "
         "disqualified)"),
        ("disqualified", "lead", "cannot move a disqualified lead to lead: disqualified is final"),
        ("customer", "recycled", "cannot move a customer lead to recycled: customer is final"),
        ("mql", "mql", "the lead is already mql"),
        ("mql", "won", "unknown stage 'won' (stages: subscriber, lead, mql, sal, sql, "
         "opportunity, customer, recycled, disqualified)"),
    ],
)  # fmt: skip
def test_refused_transitions_say_why(current: str, target: str, message: str) -> None:
    refused = transition(current, target, RULE, NOW)
    assert isinstance(refused, Refusal) and refused.message == message


def test_leaving_recycled_starts_a_new_cycle() -> None:
    back = transition("recycled", "mql", RULE, NOW)
    assert isinstance(back, Transition) and back.starts_new_cycle
    out = transition("recycled", "disqualified", RULE, NOW)
    assert isinstance(out, Transition) and not out.starts_new_cycle


def lead(**fields: object) -> dict[str, object]:
    return {"email": "ana@acme.example", "company_size": 500, "lifecycle_stage": "lead", **fields}


def test_mql_rule_compound_and_exclusion() -> None:
    assert SPEC is not None
    fit = frozenset({"decision_maker"})
    found = assess(SPEC, lead(), ScoreView(60, fit), [], None, None, NOW)
    assert found.promotion is not None and found.promotion.rule == "engaged-decision-maker"
    no_fit = assess(SPEC, lead(), ScoreView(99, frozenset()), [], None, None, NOW)
    assert no_fit.promotion is None
    assert "engaged-decision-maker: score 99 >= 60; fit decision_maker missing" in no_fit.why_not
    rival = assess(SPEC, lead(email="x@Rival.Example"), ScoreView(500, fit), [], None, None, NOW)
    assert rival.promotion is None and rival.why_not == "excluded: works for a competitor"
    sales = assess(SPEC, lead(lifecycle_stage="sal"), ScoreView(500, fit), [], None, None, NOW)
    assert sales.promotion is None and "not marketing's lead" in sales.why_not


def test_fast_track_counts_only_events_of_this_stage_and_window() -> None:
    assert SPEC is not None
    views = [("pricing_page_view", NOW - timedelta(days=d)) for d in (1, 2, 3)]
    hot = assess(SPEC, lead(), ScoreView(0), views, None, None, NOW)
    assert hot.promotion is not None and hot.promotion.target is Stage.mql and hot.promotion.hot
    since = NOW - timedelta(days=2, hours=12)  # the first view was before the current stage
    assert assess(SPEC, lead(), ScoreView(0), views, since, None, NOW).promotion is None
    old = [("demo_requested", NOW - timedelta(days=400))]
    demo = assess(SPEC, lead(), ScoreView(0), [*views, *old], None, None, NOW)
    assert demo.promotion is not None and demo.promotion.target is Stage.sql  # sql wins


def test_cool_down_holds_the_score_but_not_a_buying_signal() -> None:
    assert SPEC is not None
    recycled = lead(lifecycle_stage="recycled")
    until = NOW + timedelta(days=10)
    fit = ScoreView(90, frozenset({"decision_maker"}))
    cooling = assess(SPEC, recycled, fit, [], None, until, NOW)
    assert cooling.promotion is None and cooling.why_not.startswith("recycled: cool-down until")
    demo = [("demo_requested", NOW)]
    assert assess(SPEC, recycled, fit, demo, None, until, NOW).promotion is not None
    assert assess(SPEC, recycled, fit, [], None, NOW, NOW).promotion is not None


def test_signature_round_trip() -> None:
    body = b'{"event":"handoff.mql"}'
    headers = signed_headers("s3cret", body, NOW, delivery="7", event="handoff.mql")
    stamp, signature = headers["X-Nurture-Timestamp"], headers["X-Nurture-Signature"]
    assert signature.startswith("v1=") and stamp == str(int(NOW.timestamp()))
    assert verify("s3cret", body, headers, NOW + timedelta(seconds=30))
    later = {**headers, "X-Nurture-Timestamp": str(int(stamp) + 1)}
    assert not verify("s3cret", body, later, NOW)
    assert not verify("s3cret", body, {**headers, "X-Nurture-Timestamp": "not-a-number"}, NOW)


def test_validate_reports_lifecycle_problems_with_file_and_line() -> None:
    broken = FIXTURES / "broken"
    result = CliRunner().invoke(app, ["validate", str(broken), "--templates", str(TEMPLATES)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    where = lines[0].split(":")[0]
    assert where.endswith("lifecycle.yaml")
    messages = [line.split(": ", 1)[1] for line in lines[:-1]]
    numbers = [int(line.split(":")[1]) for line in lines[:-1]]
    assert numbers == [6, 9, 14, 17]
    assert messages[0].startswith("mql.rules[0].fit: no fit rule 'decision_makr' in scoring.yaml")
    assert "(did you mean 'decision_maker'?)" in messages[0]
    assert (
        messages[1]
        == "fast_track[0].event: unknown event 'demo_request' (did you mean 'demo_requested'?)"
    )
    assert messages[2] == "sales.reject_reasons.timing.sequence: no sequence 'renurture-missing'"
    assert messages[3] == "sla.country: no holiday calendar for 'XX'"


def test_shape_errors_name_the_line(tmp_path: Path) -> None:
    file = tmp_path / "lifecycle.yaml"
    file.write_text(
        "kind: lifecycle\nmql:\n  rules: [{name: a, min_score: 60}]\n"
        "sales:\n  reject_reasons:\n    timing: {cooldown: 2 business days}\n"
        "sla:\n  mql: 1d\n  bogus: 1\n",
        encoding="utf-8",
    )
    loaded, problems = load_lifecycle_file(file)
    assert loaded is None
    assert [(p.line, p.message) for p in problems] == [
        (6, "sales.reject_reasons.timing.cooldown: cooldown: use calendar time such as '90d'"),
        (8, "sla.mql: an SLA counts business days, e.g. '1 business day'"),
        (9, "sla: unknown field 'bogus'"),
    ]


def test_the_shipped_funnel_validates() -> None:
    root = REPO
    result = CliRunner().invoke(
        app, ["validate", str(root / "sequences"), "--templates", str(root / "templates")]
    )
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("total", [0, 30, 60, 99, 500])
@pytest.mark.parametrize("fit", [frozenset(), frozenset({"decision_maker"})])
@pytest.mark.parametrize("days", [(), (1,), (1, 2, 3), (400,)])
def test_a_lead_that_may_not_be_promoted_is_not_promoted(
    total: int, fit: frozenset[str], days: tuple[int, ...]
) -> None:
    # evaluate_leads assesses in full only the leads may_promote lets through.
    assert SPEC is not None
    score = ScoreView(total, fit)
    events = [("pricing_page_view", NOW - timedelta(days=d)) for d in days]
    possible = may_promote(SPEC, score, events, None, NOW)
    found = assess(SPEC, lead(), score, events, None, None, NOW)
    assert possible or found.promotion is None
    assert not possible or found.promotion is not None  # nothing else stops this lead
