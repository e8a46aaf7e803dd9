"""evaluate_leads works per batch: its decisions and recorded scores are those of the
lead-by-lead rules, with a number of statements that does not grow with the batch; the
score ceilings it skips exact scores with never fall below a score."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert, select
from support.funnel import MONDAY, add_lead, funnel, make_runtime, use_fixture_folder

from nurture.db.models import Event, Lead, ScoreEntry, StageChange
from nurture.db.session import transaction
from nurture.funnel.promotion import assess_lead, evaluate_leads
from nurture.runtime import Runtime
from nurture.scoring.ledger import score_events
from nurture.scoring.rules import ScoringRules
from nurture.scoring.scores import lead_score, lead_scores, score_ceilings

NOW = MONDAY + timedelta(days=200)
TITLES = ["Director of Finance", "Accountant", "VP Operations", "Clerk"]


@pytest.fixture
def rt(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    use_fixture_folder(monkeypatch)
    runtime = make_runtime(db_url)
    yield runtime
    runtime.close()


@contextmanager
def counting(engine: Engine) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def history(rt: Runtime, leads: int, rng: random.Random, prefix: str = "lead") -> list[int]:
    """``leads`` leads (some sole traders, some recycled and cooling down) with random
    behavior over the last 200 days, scored but not evaluated."""
    ids = []
    for n in range(leads):
        fields: dict[str, Any] = {"title": rng.choice(TITLES)}
        if n % 9 == 4:
            fields["company_size"] = 5  # sole trader: never an MQL
        if n % 7 == 3:
            fields.update(lifecycle_stage="recycled", recycle_until=NOW + timedelta(days=9))
        ids.append(add_lead(rt, f"{prefix}{n}@acme.example", MONDAY, enrolled=False, **fields))
    with transaction(rt.sessions) as session:
        rows = [_event(lead_id, f"{prefix}{n}", rng) for n, lead_id in enumerate(ids * 12)]
        session.execute(insert(Event), [row for row in rows if row])
        event_ids = list(session.scalars(select(Event.id).where(Event.lead_id.in_(ids))))
        score_events(session, event_ids, NOW, rules=rt.program.scoring)
    return ids


def _event(lead_id: int, key: str, rng: random.Random) -> dict[str, Any] | None:
    kind = rng.choices(["page_visit", "pricing_page_view", "demo_requested", ""], [40, 9, 1, 50])
    if not kind[0]:
        return None
    at = NOW - timedelta(minutes=rng.randrange(200 * 24 * 60))
    return {
        "lead_id": lead_id,
        "type": kind[0],
        "occurred_at": at,
        "dedupe_key": f"t:{key}",
        "data": {"url": "https://acme.example/x"},
        "is_human": True,
        "created_at": at,
    }


def test_batch_decisions_are_the_lead_by_lead_decisions(rt: Runtime) -> None:
    ids = history(rt, 60, random.Random(7))
    spec = funnel(rt).spec
    assert spec is not None
    with transaction(rt.sessions) as session:
        leads = session.scalars(select(Lead).where(Lead.id.in_(ids)).order_by(Lead.id)).all()
        expected = {}
        for found in leads:
            promotion = assess_lead(session, found, NOW, spec, rules=rt.program.scoring).promotion
            if promotion is not None and found.lifecycle_stage in ("lead", "recycled"):
                score = lead_score(session, found.id, NOW, rules=rt.program.scoring)
                expected[found.id] = (promotion.target.value, promotion.kind.value, score.total)
        # Some leads are judged on their ceiling, others on their exact score.
        ceilings = [
            c.total for c in score_ceilings(session, ids, NOW, rules=rt.program.scoring).values()
        ]
        assert min(ceilings) < 60 <= max(ceilings)
        changes = evaluate_leads(session, ids, NOW, funnel(rt))
        got = {c.lead_id: (c.to_stage, c.reason_kind, c.score) for c in changes}
        session.rollback()
    # Rules and triggers both fired somewhere, and some leads stayed where they were.
    assert {kind for _, kind, _ in expected.values()} == {"rule", "trigger"}
    assert 0 < len(expected) < len(ids)
    assert got == expected


def test_a_trigger_below_the_threshold_records_the_exact_score(rt: Runtime) -> None:
    lead_id = add_lead(rt, "quiet@acme.example", MONDAY, enrolled=False, title="Clerk")
    at = MONDAY + timedelta(days=30)
    with transaction(rt.sessions) as session:
        rows = [
            {"type": "page_visit", "occurred_at": MONDAY + timedelta(days=d)} for d in (1, 2)
        ] + [{"type": "demo_requested", "occurred_at": at}]
        for n, row in enumerate(rows):
            session.add(Event(lead_id=lead_id, dedupe_key=f"q{n}", data={}, **row))
        session.flush()
        score_events(session, list(session.scalars(select(Event.id))), at, rules=rt.program.scoring)
        # Far below every MQL rule: evaluated on its ceiling, promoted by the trigger.
        assert score_ceilings(session, [lead_id], at, rules=rt.program.scoring)[lead_id].total < 60
        exact = lead_score(session, lead_id, at, rules=rt.program.scoring)
        (change,) = evaluate_leads(session, [lead_id], at, funnel(rt))
    assert (change.to_stage, change.reason_kind) == ("sql", "trigger")
    visits = 10 * 0.5 ** (29 / 90) + 10 * 0.5 ** (28 / 90)  # no fit: a clerk
    assert change.score == exact.total == pytest.approx(visits, abs=0.01)
    assert change.data["score"]["by_rule"] == exact.by_rule


def test_the_statements_do_not_grow_with_the_batch(rt: Runtime) -> None:
    """Without promotions: the same statements for 8 leads as for 40."""
    small = history(rt, 8, random.Random(1), "small")
    large = history(rt, 40, random.Random(2), "large")
    counts = []
    for ids in (small, large):
        with transaction(rt.sessions) as session, counting(rt.engine) as statements:
            # Evaluated an hour before any behavior: nothing can fire yet.
            evaluate_leads(session, ids, NOW - timedelta(days=201), funnel(rt))
            session.rollback()
        counts.append(len(statements))
    assert counts[0] == counts[1] <= 8


def test_promotions_are_written_together(rt: Runtime) -> None:
    """Each promotion reads nothing of its own: the batch reads its leads' enrollments and
    hand-offs once, and writes its stage changes, hand-offs and leads in one flush."""
    counts = []
    for leads in (3, 12):
        ids = [
            add_lead(rt, f"p{leads}-{n}@acme.example", MONDAY, enrolled=False) for n in range(leads)
        ]
        with transaction(rt.sessions) as session:
            for n, lead_id in enumerate(ids):
                at = MONDAY + timedelta(hours=1)
                kind = "demo_requested"
                session.add(
                    Event(lead_id=lead_id, type=kind, occurred_at=at, dedupe_key=f"d{leads}:{n}")
                )
            session.flush()
            score_events(
                session, list(session.scalars(select(Event.id))), MONDAY, rules=rt.program.scoring
            )
        with transaction(rt.sessions) as session, counting(rt.engine) as statements:
            changes = evaluate_leads(session, ids, MONDAY + timedelta(hours=2), funnel(rt))
        assert len(changes) == leads
        reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
        counts.append(len(reads))
    assert counts[0] == counts[1]
    with rt.sessions() as session:
        stages = session.scalars(select(StageChange.to_stage)).all()
    assert stages == ["sql"] * 15


def test_a_ceiling_is_never_below_the_score(rt: Runtime) -> None:
    """Random ledgers: decaying and lasting entries, negatives, fit taken back, entries
    up to three years old and in the future. The ceiling's total is at least the score's
    and at most a rounding above the ledger's value, and its fit rules include the
    score's."""
    rng = random.Random(11)
    ids = [add_lead(rt, f"c{n}@acme.example", MONDAY, enrolled=False) for n in range(40)]
    rows = []
    for lead_id in ids:
        for _ in range(rng.randrange(0, 30)):
            fit = rng.random() < 0.2
            rows.append(
                {
                    "lead_id": lead_id,
                    "event_id": None,
                    "category": "fit" if fit else rng.choice(["engagement", "negative"]),
                    "rule": rng.choice(["decision_maker", "icp"] if fit else ["a", "b", "c"]),
                    "points": rng.choice([-30, -5, -0.004, 0, 0.004, 1.333, 5, 10, 20]),
                    "decays": not fit and rng.random() < 0.8,
                    "occurred_at": NOW - timedelta(minutes=rng.randrange(-3000, 3 * 525_600)),
                    "created_at": NOW,
                    "detail": "",
                }
            )
    with transaction(rt.sessions) as session:
        session.execute(insert(ScoreEntry), rows)
        ceilings = score_ceilings(session, ids, NOW, rules=rt.program.scoring)
        scores = lead_scores(session, ids, NOW, rules=rt.program.scoring)
    assert {lead_id for lead_id in ids if scores[lead_id].total > 0}
    for lead_id in ids:
        assert ceilings[lead_id].total >= scores[lead_id].total
        assert ceilings[lead_id].fit_rules >= scores[lead_id].fit_rules
        # Tight: the ledger decayed exactly, plus what rounding each rule to cents and
        # each entry to cents (the lines) can move it (silence is not in the ledger).
        lines = [line for line in scores[lead_id].entries if line.rule != "long_silence"]
        rounding = 0.005 * len(lines) + 0.005 * len({line.rule for line in lines}) + 0.011
        assert ceilings[lead_id].total <= sum(line.decayed for line in lines) + rounding


def test_a_ceiling_of_an_entry_a_thousand_half_lives_old(rt: Runtime) -> None:
    """PostgreSQL's power() fails on underflow: very old history (a short half-life, an
    imported past) still gets a ceiling, on both databases."""
    lead_id = add_lead(rt, "old@acme.example", MONDAY, enrolled=False)
    old = {"lead_id": lead_id, "event_id": None, "category": "engagement", "decays": True}
    rows = [
        {**old, "rule": "a", "points": 10.0, "occurred_at": NOW - timedelta(days=800)},
        {**old, "rule": "b", "points": -5.0, "occurred_at": NOW - timedelta(days=900)},
        {**old, "rule": "c", "points": 4.0, "occurred_at": NOW - timedelta(hours=12)},
    ]
    rules = ScoringRules.build(timedelta(hours=12))  # 1,600 and 1,800 half-lives old
    with transaction(rt.sessions) as session:
        session.execute(insert(ScoreEntry), [{**r, "created_at": NOW, "detail": ""} for r in rows])
        ceiling = score_ceilings(session, [lead_id], NOW, rules=rules)[lead_id]
        score = lead_scores(session, [lead_id], NOW, rules=rules)[lead_id]
    assert score.engagement == 2.0  # the two old entries are worth nothing any more
    assert score.total <= ceiling.total <= score.total + 0.03
