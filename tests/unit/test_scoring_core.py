"""The scoring core: decay, caps, fit and negative rules, and breakdowns that add up."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from support import REPO

from nurture.authoring.yamlsource import parse_yaml
from nurture.scoring.loading import check_scoring_data, load_rules
from nurture.scoring.points import (
    Hit,
    breakdown,
    decayed,
    engagement_hits,
    fit_hits,
    profile_changes,
    silence_hits,
)
from nurture.scoring.rules import EventFacts, ScoringRules, compile_rules

ROOT = REPO
SHIPPED = ROOT / "sequences" / "scoring.yaml"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HALF_LIFE = timedelta(days=90)


def rules_from(text: str) -> ScoringRules:
    data, lines = parse_yaml("kind: scoring\n" + text, "scoring.yaml")
    checked = check_scoring_data(data, lines, "scoring.yaml")
    assert checked.spec is not None, [str(p) for p in checked.problems]
    return compile_rules(checked.spec)


@pytest.fixture(scope="module")
def shipped() -> ScoringRules:
    return load_rules(SHIPPED)


def event(
    type_: str = "page_visit",
    at: datetime = T0,
    *,
    human: bool = True,
    n: int = 1,
    sequence: str = "",
    step: str = "",
    **data: Any,
) -> EventFacts:
    return EventFacts(n, 7, type_, at, data, human, sequence, step)


def names(hits: list[Hit]) -> list[tuple[str, float]]:
    return [(h.rule, h.points) for h in hits]


# -- decay ---------------------------------------------------------------------------------


def test_exactly_half_after_one_half_life_and_a_quarter_after_two() -> None:
    assert decayed(40, T0, T0 + HALF_LIFE, HALF_LIFE) == 20
    assert decayed(40, T0, T0 + 2 * HALF_LIFE, HALF_LIFE) == 10
    assert decayed(40, T0, T0, HALF_LIFE) == 40
    assert decayed(40, T0, T0 + HALF_LIFE / 2, HALF_LIFE) == pytest.approx(40 / 2**0.5)


def test_future_entries_count_fully() -> None:
    assert decayed(12, T0 + timedelta(hours=1), T0, HALF_LIFE) == 12


def test_fit_and_non_decaying_entries_keep_their_points() -> None:
    entries = [
        Hit("decision_maker", "fit", 15, False, T0),
        Hit("unsubscribed", "negative", -25, False, T0),
        Hit("demo_requested", "engagement", 30, True, T0),
    ]
    later = breakdown(entries, T0 + 2 * HALF_LIFE, HALF_LIFE)
    assert later.by_rule == {"decision_maker": 15, "demo_requested": 7.5, "unsubscribed": -25}
    assert (later.fit, later.engagement, later.negative, later.total) == (15, 7.5, -25, -2.5)
    assert later.fit_rules == {"decision_maker"} and later.negative_rules == {"unsubscribed"}


# -- breakdowns add up ---------------------------------------------------------------------


def test_breakdown_sums_exactly_for_many_random_ledgers() -> None:
    rng = random.Random(20260105)
    rules = [f"rule_{n}" for n in range(12)]
    categories = {r: rng.choice(["fit", "engagement", "negative"]) for r in rules}
    for _ in range(400):
        entries = [
            Hit(
                rule := rng.choice(rules),
                categories[rule],
                rng.choice([1, 2, 3, 5, 7.5, 10, 0.1, 1 / 3, -4, -12.25, 0]),
                categories[rule] == "engagement" or rng.random() < 0.2,
                T0 - timedelta(seconds=rng.randrange(0, 400 * 86400)),
            )
            for _ in range(rng.randrange(0, 40))
        ]
        at = T0 + timedelta(seconds=rng.randrange(-86400, 86400 * 30))
        half_life = timedelta(days=rng.choice([7, 30, 90]))
        result = breakdown(entries, at, half_life)
        exact: dict[str, float] = {}
        for e in entries:
            value = decayed(e.points, e.occurred_at, at, half_life) if e.decays else e.points
            exact[e.rule] = exact.get(e.rule, 0.0) + value
        assert result.by_rule.keys() == exact.keys()
        assert all(abs(result.by_rule[r] - v) <= 0.005 + 1e-9 for r, v in exact.items())
        parts = [Decimal(str(v)) for v in result.by_rule.values()]
        assert sum(parts, Decimal(0)) == Decimal(str(result.total))
        categories_sum = sum(
            (Decimal(str(v)) for v in (result.fit, result.engagement, result.negative)),
            Decimal(0),
        )
        assert categories_sum == Decimal(str(result.total))
        assert all(part == part.quantize(Decimal("0.01")) for part in parts)


def test_per_rule_rounding_is_what_the_total_adds() -> None:
    # Three thirds of a point: each rule shows 0.33, so the total shows 0.99, not 1.
    entries = [Hit(f"r{n}", "engagement", 1 / 3, False, T0) for n in range(3)]
    result = breakdown(entries, T0, HALF_LIFE)
    assert list(result.by_rule.values()) == [0.33, 0.33, 0.33]
    assert result.total == 0.99


# -- fit -----------------------------------------------------------------------------------


def lead(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "email": "jo@acme.example",
        "title": "Accounts Payable Specialist",
        "industry": "",
        "company_size": None,
        "country": "",
        "persona": "",
        "attributes": {},
    }
    return {**base, **fields}


def fit_names(rules: ScoringRules, values: dict[str, Any]) -> set[str]:
    return {r.name for r in fit_hits(rules, values)}


def test_icp_rules_of_the_shipped_file(shipped: ScoringRules) -> None:
    icp = lead(
        industry="Logistics",  # compared case-insensitively
        company_size=2200,
        country="JP",
        attributes={"erp": "SAP"},
    )
    assert fit_names(shipped, icp) == {
        "icp_industry",
        "icp_size_core",
        "icp_country",
        "erp_supported",
    }
    outside = lead(industry="media", company_size=120, country="BR", attributes={"erp": "Xero"})
    assert fit_names(shipped, outside) == {"icp_size_small"}
    assert fit_names(shipped, lead(company_size=5000)) == {"icp_size_enterprise"}
    assert fit_names(shipped, lead(company_size=199)) == {"icp_size_small"}
    assert fit_names(shipped, lead(company_size="450")) == {"icp_size_core"}  # CSV text


@pytest.mark.parametrize(
    ("title", "decides"),
    [
        ("CFO", True),
        ("VP of Finance", True),
        ("Head of Procurement", True),
        ("director of it", True),
        ("Chief Procurement Officer", True),
        ("재무담당 상무", True),
        ("購買部長", True),
        ("Leiterin Rechnungswesen", True),
        ("Procurement Manager", False),
        ("Assistant Controller", False),
        ("Senior Buyer", False),
        ("Headcount Planner", False),  # 'Head' as a word, not inside one
    ],
)
def test_decision_maker_title_pattern(shipped: ScoringRules, title: str, decides: bool) -> None:
    assert ("decision_maker" in fit_names(shipped, lead(title=title))) is decides


def test_free_mail_and_competitor_domains(shipped: ScoringRules) -> None:
    assert "free_mail_domain" in fit_names(shipped, lead(email="jo.kim@Naver.com"))
    assert "free_mail_domain" in fit_names(shipped, lead(email="a@gmail.com"))
    assert "competitor_domain" in fit_names(shipped, lead(email="spy@eu.apstream.example"))
    clean = fit_names(shipped, lead(email="jo@acme.example"))
    assert not clean & {"free_mail_domain", "competitor_domain"}
    rules = {r.name: r for r in shipped.attribute_rules}
    assert rules["free_mail_domain"].category == rules["competitor_domain"].category == "negative"


def test_profile_changes_append_and_take_back() -> None:
    rules = rules_from(
        "fit:\n"
        "  icp_industry: {points: 15, if: {attribute: industry, in: [retail]}}\n"
        "  erp: {points: 10, if: {attribute: erp, in: [SAP]}}\n"
    )
    same = lead(industry="retail", attributes={"erp": "SAP"})
    first = profile_changes(rules, same, {}, T0)
    assert names(first) == [("icp_industry", 15), ("erp", 10)]
    held = {"icp_industry": 15.0, "erp": 10.0}
    assert profile_changes(rules, same, held, T0) == []
    moved = profile_changes(rules, lead(industry="media", attributes={"erp": "SAP"}), held, T0)
    assert names(moved) == [("icp_industry", -15)]
    assert moved[0].detail == "profile: no longer holds (industry='media')"
    repriced = profile_changes(rules, same, {"icp_industry": 10.0, "erp": 10.0}, T0)
    assert names(repriced) == [("icp_industry", 5)]
    assert repriced[0].detail == "profile: points 10 -> 15 (industry='retail')"
    gone = profile_changes(rules, lead(), {"old_rule": 5.0}, T0)
    assert names(gone) == [("old_rule", -5)] and gone[0].detail == "profile: rule removed"


# -- events and caps -------------------------------------------------------------------------


def test_url_patterns_path_and_locale_prefix(shipped: ScoringRules) -> None:
    def hit(url: str, type_: str = "page_visit") -> list[tuple[str, float]]:
        return names(engagement_hits(shipped, event(type_, url=url), {}))

    assert hit("https://www.ledgerline.example/blog/three-way-match-explained") == [
        ("blog_visit", 2)
    ]
    assert hit("https://www.ledgerline.example/ko/blog/accruals-without-the-chase?utm=x") == [
        ("blog_visit", 2)
    ]
    assert hit("https://www.ledgerline.example/pricing/") == [("pricing_page_visit", 10)]
    assert hit("https://www.ledgerline.example/customers/halvorsen-foods") == [
        ("case_study_visit", 6)
    ]
    assert hit("https://www.ledgerline.example/case-studies/acme") == [("case_study_visit", 6)]
    assert hit("https://www.ledgerline.example/careers") == []
    assert hit("https://www.ledgerline.example/blog/x", "content_download") == []


def test_content_stage_weights(shipped: ScoringRules) -> None:
    def points(stage: str) -> list[tuple[str, float]]:
        return names(engagement_hits(shipped, event("content_download", content_stage=stage), {}))

    assert points("awareness") == [("download_awareness", 4)]
    assert points("consideration") == [("download_consideration", 8)]
    assert points("Decision") == [("download_decision", 12)]
    assert points("") == []


def test_sequence_and_step_of_an_email(shipped: ScoringRules) -> None:
    decision = event("clicked", sequence="finance-leader-decision", step="roi")
    assert names(engagement_hits(shipped, decision, {})) == [
        ("email_click", 3),
        ("decision_email_click", 4),
    ]
    awareness = event("clicked", sequence="finance-leader-awareness", step="welcome")
    assert names(engagement_hits(shipped, awareness, {})) == [("email_click", 3)]
    rules = rules_from("engagement:\n  roi: {event: clicked, step: [roi, roi-*], points: 5}\n")
    assert names(engagement_hits(rules, decision, {})) == [("roi", 5)]
    assert engagement_hits(rules, awareness, {}) == []


def test_regex_and_data_conditions() -> None:
    rules = rules_from(
        "engagement:\n"
        "  contact_form:\n"
        "    event: form_submitted\n"
        "    url_regex: '/(contact|talk-to-us)\\b'\n"
        "    data: {attribute: form, eq: Contact}\n"
        "    points: 9\n"
    )
    good = event("form_submitted", url="https://x.example/contact?x=1", form="contact")
    assert names(engagement_hits(rules, good, {})) == [("contact_form", 9)]
    other_form = event("form_submitted", url="https://x.example/contact", form="newsletter")
    assert engagement_hits(rules, other_form, {}) == []


def test_non_human_events_never_score(shipped: ScoringRules) -> None:
    bot = event("clicked", human=False, sequence="finance-leader-decision")
    assert engagement_hits(shipped, bot, {}) == []
    assert engagement_hits(shipped, event("demo_requested", human=False), {}) == []


def run(rules: ScoringRules, events: list[EventFacts]) -> list[tuple[str, float]]:
    """Score events in order, keeping the cap history as the service does."""
    history: dict[str, list[datetime]] = {}
    result = []
    for e in events:
        for h in engagement_hits(rules, e, history):
            if not h.capped:
                history.setdefault(h.rule, []).append(h.occurred_at)
            result.append((h.rule, h.points))
    return result


def test_fourth_blog_visit_in_a_week_scores_zero_and_a_later_one_scores(
    shipped: ScoringRules,
) -> None:
    url = "https://www.ledgerline.example/blog/where-maverick-spend-hides"
    days = [0, 1, 2, 6.9, 7.01, 30]
    visits = [event(at=T0 + timedelta(days=d), url=url, n=i) for i, d in enumerate(days)]
    # Day 7.01: the visit of day 0 left the window (7d), so two are counted in it.
    assert run(shipped, visits) == [
        ("blog_visit", 2),
        ("blog_visit", 2),
        ("blog_visit", 2),
        ("blog_visit", 0),
        ("blog_visit", 2),
        ("blog_visit", 2),
    ]
    capped = engagement_hits(shipped, visits[3], {"blog_visit": [T0, T0, T0]})
    assert capped[0].capped and capped[0].detail.startswith("capped (3 per 7d already counted)")


# -- negatives ------------------------------------------------------------------------------


def test_unsubscribe_bounce_and_complaint_do_not_decay(shipped: ScoringRules) -> None:
    hits = [
        h
        for type_ in ("unsubscribed", "bounced", "complained", "deferred")
        for h in engagement_hits(shipped, event(type_), {})
    ]
    assert names(hits) == [("unsubscribed", -25), ("hard_bounce", -30), ("spam_complaint", -40)]
    later = breakdown(hits, T0 + 4 * HALF_LIFE, shipped.half_life)
    assert later.negative == -95 and later.total == -95


def test_long_silence_counts_from_the_last_engagement(shipped: ScoringRules) -> None:
    created = T0 - timedelta(days=400)
    last = T0 - timedelta(days=119)
    assert silence_hits(shipped, last, created, T0) == []
    hits = silence_hits(shipped, last, created, T0 + timedelta(days=1))
    assert names(hits) == [("long_silence", -10)]
    assert hits[0].occurred_at == last + timedelta(days=120)
    assert hits[0].detail == "no engagement for 120d (since 2025-11-03)"
    never = silence_hits(shipped, None, T0, T0 + timedelta(days=121))
    assert names(never) == [("long_silence", -10)]


def test_negative_rules_may_decay() -> None:
    rules = rules_from(
        "negative:\n"
        "  complained: {event: complained, points: -40, decays: true}\n"
        "  bounced: {event: bounced, points: -30}\n"
    )
    hits = [h for t in ("complained", "bounced") for h in engagement_hits(rules, event(t), {})]
    result = breakdown(hits, T0 + HALF_LIFE, rules.half_life)
    assert result.by_rule == {"bounced": -30, "complained": -20}


def test_no_rules_score_nothing() -> None:
    empty = ScoringRules()
    assert engagement_hits(empty, event("demo_requested"), {}) == []
    assert fit_hits(empty, lead(title="CFO")) == []
    assert breakdown([], T0, empty.half_life).total == 0
