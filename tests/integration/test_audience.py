"""Who enters which sequence: the audience rules (pure) and the enrollment service (database)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from nurture.db.models import Enrollment, Lead, Suppression
from nurture.db.session import transaction
from nurture.sequences.audience import Outcome, PastEnrollment, choose_sequence
from nurture.sequences.catalog import Catalog, publish
from nurture.sequences.enrollment import enroll, enroll_many
from nurture.sequences.spec import SequenceSpec
from nurture.sequences.versions import LoadedSequence

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def spec(key: str, personas: list[str], stages: list[str], **extra: Any) -> SequenceSpec:
    """A small valid sequence: email, wait, email."""
    document: dict[str, Any] = {
        "key": key,
        "name": key.title(),
        "audience": {"personas": personas, "journey_stages": stages},
        "steps": [
            {"id": "welcome", "email": {"template": "t/welcome", "subject": "Hi"}},
            {"id": "pause", "wait": "3d"},
            {"id": "follow-up", "email": {"template": "t/follow", "subject": "More"}},
        ],
    }
    for name, value in extra.items():
        if name == "lifecycle":
            document["audience"]["lifecycle_stages"] = value
        else:
            document[name] = value
    return SequenceSpec.model_validate(document)


IT = spec("it-awareness", ["it-leader"], ["awareness"])
IT_AGAIN = spec(
    "it-consideration",
    ["it-leader"],
    ["consideration"],
    entry={"policy": "again", "cooldown": "90d"},
)
CUSTOMERS = spec("onboarding", ["it-leader"], ["decision"], lifecycle=["customer"])
SPECS = [IT, IT_AGAIN, CUSTOMERS]


def past(key: str, status: str, entered: datetime, exited: datetime | None) -> PastEnrollment:
    return PastEnrollment(key, status, entered, exited)


# --- the rules (pure) ---------------------------------------------------------------------


def test_persona_and_journey_stage_pick_the_sequence() -> None:
    decision = choose_sequence(SPECS, "it-leader", "awareness", "lead", [], NOW)
    assert decision.enroll and decision.spec == IT and decision.sequence_key == "it-awareness"
    other = choose_sequence(SPECS, "it-leader", "consideration", "subscriber", [], NOW)
    assert other.spec == IT_AGAIN


def test_no_sequence_for_an_unknown_persona_or_stage() -> None:
    decision = choose_sequence(SPECS, "cfo", "awareness", "lead", [], NOW)
    assert decision.outcome is Outcome.no_sequence and decision.spec is None
    assert "persona 'cfo'" in decision.detail and "'awareness'" in decision.detail
    no_persona = choose_sequence(SPECS, "", "awareness", "lead", [], NOW)
    assert no_persona.outcome is Outcome.no_sequence
    assert "without a persona" in no_persona.detail


def test_lifecycle_stage_must_be_in_the_audience() -> None:
    mql = choose_sequence(SPECS, "it-leader", "awareness", "mql", [], NOW)
    assert mql.outcome is Outcome.lifecycle_excluded
    assert "'mql'" in mql.detail and "it-awareness" in mql.detail
    recycled = choose_sequence(SPECS, "it-leader", "awareness", "recycled", [], NOW)
    assert recycled.enroll
    # A sequence can be for customers only; then a lead does not enter it.
    assert choose_sequence(SPECS, "it-leader", "decision", "customer", [], NOW).spec == CUSTOMERS
    lead = choose_sequence(SPECS, "it-leader", "decision", "lead", [], NOW)
    assert lead.outcome is Outcome.lifecycle_excluded


def test_disqualified_leads_are_never_nurtured() -> None:
    anyone = spec("all", ["it-leader"], ["awareness"], lifecycle=["disqualified", "lead"])
    decision = choose_sequence([anyone], "it-leader", "awareness", "disqualified", [], NOW)
    assert decision.outcome is Outcome.disqualified


def test_one_sequence_at_a_time() -> None:
    history = [past("onboarding", "active", NOW - timedelta(days=2), None)]
    decision = choose_sequence(SPECS, "it-leader", "awareness", "lead", history, NOW)
    assert decision.outcome is Outcome.already_active
    assert decision.sequence_key == "onboarding" and "onboarding" in decision.detail


def test_policy_once_admits_a_lead_only_once() -> None:
    history = [
        past("it-awareness", "completed", NOW - timedelta(days=400), NOW - timedelta(days=300))
    ]
    decision = choose_sequence(SPECS, "it-leader", "awareness", "lead", history, NOW)
    assert decision.outcome is Outcome.entered_once
    assert "once" in decision.detail
    # Other sequences' history does not count against it.
    other = [past("onboarding", "exited", NOW - timedelta(days=9), NOW - timedelta(days=1))]
    assert choose_sequence(SPECS, "it-leader", "awareness", "lead", other, NOW).enroll


def test_policy_again_waits_for_the_cooldown_after_the_last_exit() -> None:
    last_exit = NOW - timedelta(days=30)
    history = [
        past("it-consideration", "completed", NOW - timedelta(days=400), NOW - timedelta(days=350)),
        past("it-consideration", "exited", NOW - timedelta(days=60), last_exit),
    ]
    decision = choose_sequence(SPECS, "it-leader", "consideration", "lead", history, NOW)
    assert decision.outcome is Outcome.cooling_down
    assert decision.until == last_exit + timedelta(days=90)
    assert "until 2026-05-01 09:00 UTC" in decision.detail
    just_before = last_exit + timedelta(days=90) - timedelta(seconds=1)
    assert not choose_sequence(
        SPECS, "it-leader", "consideration", "lead", history, just_before
    ).enroll
    at_end = last_exit + timedelta(days=90)
    assert choose_sequence(SPECS, "it-leader", "consideration", "lead", history, at_end).enroll


def test_overlapping_sequences_are_tried_in_key_order() -> None:
    first = spec("a-first", ["it-leader"], ["awareness"])
    second = spec("b-second", ["it-leader"], ["awareness"])
    assert choose_sequence([second, first], "it-leader", "awareness", "lead", [], NOW).spec == first
    done = [past("a-first", "completed", NOW - timedelta(days=20), NOW - timedelta(days=5))]
    decision = choose_sequence([second, first], "it-leader", "awareness", "lead", done, NOW)
    assert decision.spec == second


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        choose_sequence(SPECS, "it-leader", "awareness", "lead", [], datetime(2026, 3, 2))


# --- the enrollment service (database) ----------------------------------------------------


@pytest.fixture
def catalog(session_factory: sessionmaker[Session]) -> Catalog:
    with transaction(session_factory) as session:
        return publish(session, [LoadedSequence(s, f"{s.key}.yaml") for s in SPECS], NOW)


def add_lead(session: Session, email: str, **values: Any) -> Lead:
    fields = {"persona": "it-leader", "journey_stage": "awareness", "lifecycle_stage": "lead"}
    lead = Lead(email=email, **{**fields, **values})
    session.add(lead)
    session.flush()
    return lead


def test_enroll_starts_at_the_first_step_of_the_latest_version(
    session_factory: sessionmaker[Session], catalog: Catalog
) -> None:
    with transaction(session_factory) as session:
        enrollment = enroll(session, add_lead(session, "ana@acme.io"), catalog, NOW)
    assert enrollment is not None
    with session_factory() as session:
        stored = session.scalars(select(Enrollment)).one()
    assert stored.sequence_key == "it-awareness"
    assert stored.sequence_version == catalog.latest("it-awareness").version
    assert stored.current_step == "welcome" and stored.status == "active"
    assert stored.next_run_at == NOW and stored.step_started_at == NOW == stored.entered_at


def test_enroll_respects_history_and_lifecycle(
    session_factory: sessionmaker[Session], catalog: Catalog
) -> None:
    with transaction(session_factory) as session:
        lead = add_lead(session, "ana@acme.io")
        assert enroll(session, lead, catalog, NOW) is not None
        assert enroll(session, lead, catalog, NOW) is None  # already active
        mql = add_lead(session, "bo@acme.io", lifecycle_stage="mql")
        assert enroll(session, mql, catalog, NOW) is None
    with transaction(session_factory) as session:
        first = session.scalars(select(Enrollment)).one()
        first.status, first.exited_at = "completed", NOW + timedelta(days=10)
    with transaction(session_factory) as session:
        lead = session.scalars(select(Lead).where(Lead.email == "ana@acme.io")).one()
        # Entry policy once: finishing the sequence does not let the lead in again.
        assert enroll(session, lead, catalog, NOW + timedelta(days=20)) is None
        lead.journey_stage = "consideration"
        again = enroll(session, lead, catalog, NOW + timedelta(days=20))
        assert again is not None and again.sequence_key == "it-consideration"


def test_suppressed_addresses_are_not_enrolled(
    session_factory: sessionmaker[Session], catalog: Catalog
) -> None:
    with transaction(session_factory) as session:
        session.add(Suppression(email="bo@acme.io", reason="unsubscribed"))
        outcomes = enroll_many(
            session,
            [add_lead(session, "Bo@Acme.io"), add_lead(session, "cy@acme.io")],
            catalog,
            NOW,
        )
    assert [o.decision.outcome for o in outcomes] == [Outcome.suppressed, Outcome.enroll]
    assert outcomes[0].enrollment is None and outcomes[1].enrollment is not None
    with session_factory() as session:
        assert session.scalars(select(Enrollment.lead_id)).all() == [outcomes[1].lead.id]


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


def test_enroll_many_costs_the_same_few_queries_for_any_batch(
    engine: Engine, session_factory: sessionmaker[Session], catalog: Catalog
) -> None:
    with transaction(session_factory) as session:
        leads = [add_lead(session, f"lead{n}@acme.io") for n in range(200)]
        with counting(engine) as statements:
            outcomes = enroll_many(session, leads + leads[:5], catalog, NOW)
    # lock + histories + suppressions + the inserts (a few, however many rows)
    assert len(statements) <= 8, statements
    assert sum(1 for o in outcomes if o.enrollment is not None) == 200
    assert [o.decision.outcome for o in outcomes[-5:]] == [Outcome.already_active] * 5
    with session_factory() as session:
        assert len(session.scalars(select(Enrollment)).all()) == 200


def test_a_recycled_lead_is_silent_until_its_cool_down_ends() -> None:
    from datetime import UTC, datetime, timedelta

    from nurture.sequences.audience import Outcome, choose_sequence
    from nurture.sequences.spec import SequenceSpec

    spec = SequenceSpec.model_validate(
        {
            "key": "renurture",
            "name": "Re-nurture",
            "audience": {
                "personas": ["cfo"],
                "journey_stages": ["awareness"],
                "lifecycle_stages": ["recycled"],
            },
            "steps": [{"id": "hello", "exit": "done"}],
        }
    )
    now = datetime(2026, 6, 1, tzinfo=UTC)
    until = now + timedelta(days=60)
    during = choose_sequence([spec], "cfo", "awareness", "recycled", [], now, recycle_until=until)
    assert during.outcome is Outcome.cooling_down and during.until == until
    after = choose_sequence([spec], "cfo", "awareness", "recycled", [], until, recycle_until=until)
    assert after.enroll
