"""Scoring against a real database (SQLite and PostgreSQL): the ledger, caps across
batches, idempotency, profile refreshes, decay under frozen time, silence."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from support import REPO

from nurture.db.models import Enrollment, Event, Lead, Message, ScoreEntry
from nurture.db.session import transaction
from nurture.funnel.funnel import Funnel
from nurture.leads.importer import ImportAborted, funnel_for_import, import_leads
from nurture.scoring.ledger import refresh_fit, score_events, score_unscored
from nurture.scoring.loading import load_rules
from nurture.scoring.rules import ScoringRules
from nurture.scoring.scores import lead_score, lead_scores
from nurture.sequences.catalog import Catalog
from nurture.settings import load_settings

ROOT = REPO
SHIPPED = ROOT / "sequences" / "scoring.yaml"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
BLOG = "https://www.ledgerline.example/blog/three-way-match-explained"
_keys = itertools.count()


@pytest.fixture(scope="module")
def rules() -> ScoringRules:
    return load_rules(SHIPPED)


def funnel_with(rules: ScoringRules) -> Funnel:
    """What the importer is handed: no sequences, no lifecycle, these scoring rules."""
    settings = load_settings(default_timezone="UTC")
    return Funnel(settings=settings, catalog=Catalog({}), lifecycle=None, scoring=rules)


def add_lead(session: Session, email: str = "julia.young@northwind.example", **fields: Any) -> int:
    values: dict[str, Any] = {
        "title": "Director of Finance",
        "industry": "retail",
        "company_size": 850,
        "country": "US",
        "persona": "finance_leader",
        "attributes": {"erp": "NetSuite"},
        "created_at": T0 - timedelta(days=30),
    }
    lead = Lead(email=email, **{**values, **fields})
    session.add(lead)
    session.flush()
    return lead.id


def add_event(
    session: Session,
    lead_id: int | None,
    type_: str = "page_visit",
    at: datetime = T0,
    *,
    human: bool = True,
    message_id: int | None = None,
    **data: Any,
) -> int:
    event = Event(
        lead_id=lead_id,
        message_id=message_id,
        type=type_,
        occurred_at=at,
        dedupe_key=f"test:{next(_keys)}",
        data=data,
        is_human=human,
    )
    session.add(event)
    session.flush()
    return event.id


def ledger(session: Session, lead_id: int) -> list[tuple[str, float]]:
    query = select(ScoreEntry.rule, ScoreEntry.points).where(ScoreEntry.lead_id == lead_id)
    return [(r, p) for r, p in session.execute(query.order_by(ScoreEntry.id))]


def test_events_become_ledger_entries_once(
    session_factory: sessionmaker[Session], rules: ScoringRules
) -> None:
    with transaction(session_factory) as s:
        lead = add_lead(s)
        ids = [
            add_event(s, lead, "page_visit", T0, url=BLOG),
            add_event(s, lead, "demo_requested", T0 + timedelta(minutes=5)),
            add_event(s, lead, "page_visit", T0, url="https://www.ledgerline.example/careers"),
        ]
    with transaction(session_factory) as s:
        assert score_events(s, ids, T0 + timedelta(hours=1), rules=rules) == {lead}
    with transaction(session_factory) as s:
        assert score_events(s, ids, T0 + timedelta(hours=2), rules=rules) == set()
        assert ledger(s, lead) == [("blog_visit", 2), ("demo_requested", 30)]
        scored = s.scalars(select(Event.scored_at).where(Event.id.in_(ids))).all()
        assert scored == [T0 + timedelta(hours=1)] * 3
        entry = s.scalars(select(ScoreEntry).where(ScoreEntry.rule == "blog_visit")).one()
        assert (entry.event_id, entry.category, entry.decays) == (ids[0], "engagement", True)
        assert entry.detail == f"page_visit {BLOG}"


def test_non_human_events_are_marked_scored_without_entries(
    session_factory: sessionmaker[Session], rules: ScoringRules
) -> None:
    with transaction(session_factory) as s:
        lead = add_lead(s)
        bot = add_event(s, lead, "clicked", human=False, sequence="finance-leader-decision")
        orphan = add_event(s, None, "page_visit", url=BLOG)
    with transaction(session_factory) as s:
        assert score_events(s, [bot, orphan], T0, rules=rules) == set()
    with transaction(session_factory) as s:
        assert ledger(s, lead) == []
        assert s.scalar(select(func.count()).where(Event.scored_at.is_(None))) == 0


def test_cap_holds_across_batches_and_lifts_after_the_window(
    session_factory: sessionmaker[Session], rules: ScoringRules
) -> None:
    with transaction(session_factory) as s:
        lead = add_lead(s)
        other = add_lead(s, "other@northwind.example")
        week = [add_event(s, lead, at=T0 + timedelta(days=d), url=BLOG) for d in (0, 1, 2)]
        fourth = add_event(s, lead, at=T0 + timedelta(days=3), url=BLOG)
        theirs = add_event(s, other, at=T0 + timedelta(days=3), url=BLOG)
        later = add_event(s, lead, at=T0 + timedelta(days=8), url=BLOG)
    now = T0 + timedelta(days=9)
    for batch in (week, [fourth, theirs], [later]):
        with transaction(session_factory) as s:
            score_events(s, batch, now, rules=rules)
    with transaction(session_factory) as s:
        assert [p for _, p in ledger(s, lead)] == [2, 2, 2, 0, 2]
        assert ledger(s, other) == [("blog_visit", 2)]
        capped = s.scalars(select(ScoreEntry.detail).where(ScoreEntry.event_id == fourth)).one()
        assert capped.startswith("capped (3 per 7d already counted)")


def test_caps_when_a_batch_spans_months_of_history(
    session_factory: sessionmaker[Session], rules: ScoringRules
) -> None:
    with transaction(session_factory) as s:
        lead = add_lead(s)
        other = add_lead(s, "other@northwind.example")
        first = [add_event(s, lead, at=T0 + timedelta(days=d), url=BLOG) for d in (0, 1, 2)]
        first.append(add_event(s, other, at=T0 + timedelta(days=100), url=BLOG))
        second = [
            add_event(s, lead, at=T0 + timedelta(days=3), url=BLOG),  # capped
            add_event(s, lead, at=T0 + timedelta(days=200), url=BLOG),
            add_event(s, other, at=T0 + timedelta(days=101), url=BLOG),
            add_event(s, other, at=T0 + timedelta(days=102), url=BLOG),
        ]
    now = T0 + timedelta(days=365)
    for batch in (first, second):
        with transaction(session_factory) as s:
            score_events(s, batch, now, rules=rules)
    with transaction(session_factory) as s:
        assert [p for _, p in ledger(s, lead)] == [2, 2, 2, 0, 2]
        assert [p for _, p in ledger(s, other)] == [2, 2, 2]


def test_caps_when_older_events_arrive_after_newer_ones(
    session_factory: sessionmaker[Session], rules: ScoringRules
) -> None:
    """Late history counts what was counted before it, never what came after it."""
    with transaction(session_factory) as s:
        lead = add_lead(s)
        first = [add_event(s, lead, at=T0 + timedelta(days=d), url=BLOG) for d in (0, 1, 10)]
        # Day 2 fits under the cap (days 0 and 1 before it); day 3 is the fourth in its
        # week; day 9's week (after day 2) holds nothing yet: day 10 came later.
        late = [add_event(s, lead, at=T0 + timedelta(days=d), url=BLOG) for d in (9, 3, 2)]
    now = T0 + timedelta(days=30)
    for batch in (first, late):
        with transaction(session_factory) as s:
            score_events(s, batch, now, rules=rules)
    with transaction(session_factory) as s:
        query = select(ScoreEntry.event_id, ScoreEntry.points).where(ScoreEntry.lead_id == lead)
        points = {event_id: value for event_id, value in s.execute(query)}
    assert [points[i] for i in first] == [2, 2, 2]
    assert [points[i] for i in late] == [2, 0, 2]


def test_email_events_take_sequence_and_step_from_their_message(
    session_factory: sessionmaker[Session], rules: ScoringRules
) -> None:
    with transaction(session_factory) as s:
        lead = add_lead(s)
        enrollment = Enrollment(
            lead_id=lead, sequence_key="finance-leader-decision", sequence_version="1",
            current_step="roi",
        )  # fmt: skip
        s.add(enrollment)
        s.flush()
        message = Message(
            enrollment_id=enrollment.id, lead_id=lead, sequence_key="finance-leader-decision",
            sequence_version="1", step_id="roi", status="sent",
        )  # fmt: skip
        s.add(message)
        s.flush()
        click = add_event(s, lead, "clicked", message_id=message.id, url="https://x.example/")
    with transaction(session_factory) as s:
        score_events(s, [click], T0, rules=rules)
        assert ledger(s, lead) == [("email_click", 3), ("decision_email_click", 4)]


def test_negative_events_and_the_sweep(
    session_factory: sessionmaker[Session], rules: ScoringRules
) -> None:
    with transaction(session_factory) as s:
        lead = add_lead(s)
        for type_ in ("unsubscribed", "bounced", "complained"):
            add_event(s, lead, type_, T0)
    with transaction(session_factory) as s:
        assert score_unscored(s, T0, rules=rules) == {lead}
    with transaction(session_factory) as s:
        assert sorted(ledger(s, lead)) == [
            ("hard_bounce", -30),
            ("spam_complaint", -40),
            ("unsubscribed", -25),
        ]
        score = lead_score(s, lead, T0 + timedelta(days=365), rules=rules)
        assert score.by_rule == {  # these do not decay; a year without engagement is silence
            "long_silence": -10,
            "unsubscribed": -25,
            "hard_bounce": -30,
            "spam_complaint": -40,
        }
        assert score.negative == score.total == -105


def test_future_event_times_are_clamped_to_when_they_were_scored(
    session_factory: sessionmaker[Session], rules: ScoringRules
) -> None:
    with transaction(session_factory) as s:
        lead = add_lead(s)
        ahead = add_event(s, lead, "demo_requested", T0 + timedelta(minutes=3))
    with transaction(session_factory) as s:
        score_events(s, [ahead], T0, rules=rules)
        assert lead_score(s, lead, T0, rules=rules).by_rule == {"demo_requested": 30}


# -- decay under frozen time -------------------------------------------------------------------


def test_score_halves_after_one_half_life_and_quarters_after_two(
    session_factory: sessionmaker[Session], rules: ScoringRules
) -> None:
    with freeze_time(T0):
        with transaction(session_factory) as s:
            lead = add_lead(s)
            demo = add_event(s, lead, "demo_requested", datetime.now(UTC))
        with transaction(session_factory) as s:
            score_events(s, [demo], datetime.now(UTC), rules=rules)
            assert lead_score(s, lead, datetime.now(UTC), rules=rules).engagement == 30
    for days, expected in ((90, 15), (180, 7.5), (45, 21.21)):
        with freeze_time(T0 + timedelta(days=days)), session_factory() as s:
            score = lead_score(s, lead, datetime.now(UTC), rules=rules)
            assert score.engagement == expected
            assert score.by_rule["demo_requested"] == expected


# -- profile -------------------------------------------------------------------------------------


def test_refresh_fit_appends_changes_and_keeps_history(
    session_factory: sessionmaker[Session], rules: ScoringRules
) -> None:
    with transaction(session_factory) as s:
        lead = add_lead(s)
        refresh_fit(s, [lead], T0, rules=rules)
    with transaction(session_factory) as s:
        before = lead_score(s, lead, T0, rules=rules)
        assert before.fit == 43
        assert before.fit_rules == {
            "icp_industry", "icp_size_core", "icp_country", "erp_supported", "persona_match",
            "decision_maker",
        }  # fmt: skip
        refresh_fit(s, [lead], T0 + timedelta(hours=1), rules=rules)  # nothing changed
        assert len(ledger(s, lead)) == 6
    later = T0 + timedelta(days=2)
    with transaction(session_factory) as s:
        row = s.get(Lead, lead)
        assert row is not None
        row.industry, row.email = "media", "julia@gmail.com"
        refresh_fit(s, [lead], later, rules=rules)
    with transaction(session_factory) as s:
        assert ledger(s, lead)[-2:] == [("icp_industry", -10), ("free_mail_domain", -15)]
        now = lead_score(s, lead, later, rules=rules)
        assert (now.fit, now.negative, now.total) == (33, -15, 18)
        assert "icp_industry" not in now.fit_rules and now.negative_rules == {"free_mail_domain"}
        assert lead_score(s, lead, T0, rules=rules).total == 43  # the past stays as it was


def test_refresh_fit_skips_erased_leads_and_no_rules(
    session_factory: sessionmaker[Session], rules: ScoringRules
) -> None:
    with transaction(session_factory) as s:
        erased = add_lead(s, erased_at=T0)
        kept = add_lead(s, "kept@northwind.example")
        refresh_fit(s, [erased, kept], T0, rules=ScoringRules())  # no scoring file
        assert ledger(s, kept) == []
        refresh_fit(s, [erased, kept], T0, rules=rules)
        assert ledger(s, erased) == [] and len(ledger(s, kept)) == 6


def test_importer_refreshes_fit(
    session_factory: sessionmaker[Session], tmp_path: Path, rules: ScoringRules
) -> None:
    csv = tmp_path / "leads.csv"
    csv.write_text(
        "email,title,industry,company_size,country,erp\n"
        "ana@plant.example,CFO,manufacturing,400,DE,SAP\n"
        "bo@gmail.com,Student,,,,\n",
        encoding="utf-8",
    )
    report = import_leads(csv, session_factory, funnel_with(rules), now=T0, batch_size=10)
    assert report.created == 2
    with session_factory() as s:
        ids = dict(s.execute(select(Lead.email, Lead.id)).all())
        scores = lead_scores(s, list(ids.values()), T0, rules=rules)
    assert scores[ids["ana@plant.example"]].fit == 38
    assert scores[ids["bo@gmail.com"]].by_rule == {"free_mail_domain": -15}


def test_importer_refuses_broken_scoring_rules(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    broken = tmp_path / "scoring.yaml"
    broken.write_text("kind: scoring\nhalf_life: soon\n", encoding="utf-8")
    csv = tmp_path / "leads.csv"
    csv.write_text("email\nana@plant.example\n", encoding="utf-8")
    with pytest.raises(ImportAborted, match=r"scoring.yaml:2: half_life: bad duration"):
        funnel = funnel_for_import(lambda: funnel_with(load_rules(broken)))
        import_leads(csv, session_factory, funnel, now=T0)
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Lead)) == 0


# -- silence -------------------------------------------------------------------------------------


def test_long_silence_is_computed_when_read(
    session_factory: sessionmaker[Session], rules: ScoringRules
) -> None:
    with transaction(session_factory) as s:
        quiet = add_lead(s, created_at=T0)
        active = add_lead(s, "active@northwind.example", created_at=T0)
        visit = add_event(s, active, at=T0 + timedelta(days=100), url=BLOG)
        bot = add_event(s, quiet, "clicked", T0 + timedelta(days=100), human=False)
        score_events(s, [visit, bot], T0 + timedelta(days=100), rules=rules)
    at = T0 + timedelta(days=121)
    with session_factory() as s:
        scores = lead_scores(s, [quiet, active], at, rules=rules)
        assert scores[quiet].by_rule == {"long_silence": -10}  # a bot's click is no sign of life
        assert "long_silence" not in scores[active].by_rule
        assert lead_score(s, quiet, T0 + timedelta(days=119), rules=rules).total == 0
        assert s.scalar(select(func.count()).select_from(ScoreEntry)) == 1  # nothing stored
