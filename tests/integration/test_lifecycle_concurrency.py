"""Two writers and one lead: a stage change applies only to the stage it was read in.
And the recycle engagement cut: it stays a cut, for decaying and non-decaying rules."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update
from support.funnel import (
    MONDAY,
    add_lead,
    behave,
    funnel,
    history,
    lead,
    make_runtime,
    use_fixture_folder,
)

from nurture.db.models import Lead, ScoreEntry, StageChange
from nurture.db.session import transaction
from nurture.funnel.decisions import SalesDecision
from nurture.funnel.machine import Reason, ReasonKind, TransitionRefused
from nurture.funnel.sales import adjust_engagement, apply_decision
from nurture.funnel.stages import StageMoved, change_stage
from nurture.runtime import Runtime
from nurture.scoring.scores import lead_score


@pytest.fixture
def rt(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    use_fixture_folder(monkeypatch)
    return make_runtime(db_url)


def an_mql(rt: Runtime, email: str = "ana@acme.example") -> int:
    lead_id = add_lead(rt, email, enrolled=False)
    for n in range(4):
        behave(rt, lead_id, "page_visit", MONDAY + timedelta(seconds=n))
    assert lead(rt, lead_id).lifecycle_stage == "mql"
    return lead_id


def postgres_only(db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite transactions begin IMMEDIATE: two writers never overlap")


def test_two_sessions_accepting_the_same_mql_record_one_change(rt: Runtime, db_url: str) -> None:
    postgres_only(db_url)
    lead_id = an_mql(rt)
    now = MONDAY + timedelta(hours=1)
    found = funnel(rt)
    first, second = rt.sessions(), rt.sessions()
    try:
        mine, theirs = first.get(Lead, lead_id), second.get(Lead, lead_id)
        assert mine is not None and theirs is not None
        assert mine.lifecycle_stage == theirs.lifecycle_stage == "mql"  # both read it
        apply_decision(first, mine, SalesDecision(decision="accept", actor="sam"), now, found)
        first.commit()
        with pytest.raises(TransitionRefused) as refused:
            apply_decision(
                second, theirs, SalesDecision(decision="accept", actor="kim"), now, found
            )
        assert isinstance(refused.value, StageMoved)
        assert "no longer mql" in str(refused.value)
        second.rollback()
    finally:
        first.close()
        second.close()
    assert [(c.from_stage, c.to_stage, c.actor) for c in history(rt, lead_id)][1:] == [
        ("mql", "sal", "sam")
    ]
    assert lead(rt, lead_id).owner == "sam"


def test_a_change_applies_only_to_the_stage_it_was_read_in(rt: Runtime) -> None:
    lead_id = an_mql(rt)
    now = MONDAY + timedelta(hours=1)
    with rt.sessions() as session:
        stale = session.get(Lead, lead_id)
        assert stale is not None
        # The row moves behind the ORM's back, as another writer's committed change would.
        moved = update(Lead).where(Lead.id == lead_id).values(lifecycle_stage="sql")
        session.connection().execute(moved)
        assert stale.lifecycle_stage == "mql"  # what this writer read
        reason = Reason(ReasonKind.sales, "accept")
        with pytest.raises(StageMoved):
            change_stage(session, stale, "sal", reason, "sam", now, funnel=funnel(rt))
        session.flush()
        assert session.scalar(select(Lead.lifecycle_stage).where(Lead.id == lead_id)) == "sql"
        assert [c.to_stage for c in session.scalars(select(StageChange))] == ["mql"]
        session.rollback()


def ledger(rt: Runtime, lead_id: int, points: float, *, decays: bool) -> None:
    with transaction(rt.sessions) as session:
        session.add(
            ScoreEntry(
                lead_id=lead_id,
                event_id=None,
                category="engagement",
                rule="webinar" if decays else "certified",
                points=points,
                decays=decays,
                occurred_at=MONDAY,
                created_at=MONDAY,
                detail="test",
            )
        )


@pytest.mark.parametrize("keep", [0.0, 0.5])
def test_the_engagement_cut_stays_a_cut(rt: Runtime, keep: float) -> None:
    cut = add_lead(rt, "cut@acme.example", enrolled=False)
    same = add_lead(rt, "same@acme.example", enrolled=False)
    for lead_id in (cut, same):
        ledger(rt, lead_id, 40, decays=True)
        ledger(rt, lead_id, 30, decays=False)  # a `decays: false` rule
    at = MONDAY + timedelta(days=3)
    with transaction(rt.sessions) as session:
        written = adjust_engagement(session, cut, keep, "timing", at, rt.program.scoring)
    assert sorted(e.decays for e in written) == [False, True]
    assert sum(e.points for e in written if not e.decays) == -30 * (1 - keep)
    for later in (at, at + timedelta(days=30), at + timedelta(days=180)):
        with rt.sessions() as session:
            now_cut = lead_score(session, cut, later, rules=rt.program.scoring).engagement
            untouched = lead_score(session, same, later, rules=rt.program.scoring).engagement
        assert now_cut == pytest.approx(untouched * keep, abs=0.02), later


def test_no_offset_for_a_part_that_is_not_there(rt: Runtime) -> None:
    lead_id = add_lead(rt, "dec@acme.example", enrolled=False)
    ledger(rt, lead_id, 40, decays=True)
    with transaction(rt.sessions) as session:
        written = adjust_engagement(session, lead_id, 0, "timing", MONDAY, rt.program.scoring)
    assert [(e.points, e.decays) for e in written] == [(-40, True)]
    with rt.sessions() as session:
        rules = session.scalars(select(ScoreEntry.rule).where(ScoreEntry.lead_id == lead_id))
        assert "recycle:reset" in list(rules)
