"""Reading a lead's score back from its ledger at any moment: every entry decayed as the core
decays it, the silence rules applied, the breakdown summing exactly to the total; and, for
batches, a cheap upper bound summed by the database."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    case,
    extract,
    func,
    literal,
    select,
)
from sqlalchemy.orm import Session

from nurture.db.batches import chunks, one_of
from nurture.db.models import Event, Lead, ScoreEntry
from nurture.db.types import AwareDateTime
from nurture.scoring.points import (
    Hit,
    LedgerEntry,
    ScoreBreakdown,
    breakdown,
    silence_hits,
)
from nurture.scoring.rules import FIT, ScoringRules
from nurture.scoring.spec import ENGAGEMENT_EVENTS

# score_ceilings: what the database's floats (another order of summing, its own power())
# might differ by from the core's, and then some.
CEILING_SLACK = 0.01


# Ages beyond this many half-lives decay no further in SQL: PostgreSQL raises an underflow
# error for 0.5 ** 1076; 0.5 ** 1000 (1e-301 a point) changes no bound by a cent.
MAX_HALVINGS = 1000.0


def lead_score(
    session: Session, lead_id: int, at: datetime, *, rules: ScoringRules
) -> ScoreBreakdown:
    """The lead's score at ``at`` from its ledger (entries up to ``at``), with decay and
    the silence rules; ``by_rule`` sums exactly to ``total``."""
    return lead_scores(session, [lead_id], at, rules=rules)[lead_id]


def lead_scores(
    session: Session, lead_ids: Sequence[int], at: datetime, *, rules: ScoringRules
) -> dict[int, ScoreBreakdown]:
    """:func:`lead_score` for many leads in a few queries (unknown ids score 0)."""
    entries: dict[int, list[LedgerEntry]] = defaultdict(list)
    for chunk in chunks(sorted(set(lead_ids))):
        for lead_id, entry in _ledger(session, chunk, at):
            entries[lead_id].append(entry)
        if rules.silence_rules:
            for lead_id, hit in _silence(session, rules, chunk, at):
                entries[lead_id].append(hit)
    return {
        lead_id: breakdown(entries.get(lead_id, []), at, rules.half_life) for lead_id in lead_ids
    }


class Ceiling(NamedTuple):
    """What a lead's score can be at most: its total, and the fit rules that may hold."""

    total: float
    fit_rules: frozenset[str]


def score_ceilings(
    session: Session, lead_ids: Sequence[int], at: datetime, *, rules: ScoringRules
) -> dict[int, Ceiling]:
    """An upper bound of each lead's score at ``at`` (unknown ids: 0, no fit rule), summed
    by the database in two queries per chunk: a lead whose ceiling misses a threshold
    cannot reach it, so its exact score (every ledger row read and decayed here) is not
    needed to know that.

    The database sums every entry decayed as the core decays it; each rule's rounding to
    cents can add at most half a cent, silence rules only lower a score, and CEILING_SLACK
    covers the floats. A fit rule may hold when the lead has a non-zero fit entry for it."""
    weight = case((ScoreEntry.decays.is_(False), 1.0), else_=_decay(session, at, rules.half_life))
    totals: dict[int, float] = dict.fromkeys(lead_ids, 0.0)
    fit: dict[int, set[str]] = defaultdict(set)
    for chunk in chunks(sorted(set(lead_ids))):
        in_chunk = (one_of(session, ScoreEntry.lead_id, chunk), ScoreEntry.occurred_at <= at)
        query = select(
            ScoreEntry.lead_id,
            func.sum(ScoreEntry.points * weight),
            func.count(func.distinct(ScoreEntry.rule)),
        )
        for lead_id, total, rule_count in session.execute(
            query.where(*in_chunk).group_by(ScoreEntry.lead_id)
        ):
            totals[lead_id] = float(total or 0) + 0.005 * rule_count + CEILING_SLACK
        held = select(ScoreEntry.lead_id, ScoreEntry.rule).where(
            *in_chunk, ScoreEntry.category == FIT, ScoreEntry.points != 0
        )
        for lead_id, rule in session.execute(held.distinct()):
            fit[lead_id].add(rule)
    return {lead_id: Ceiling(totals[lead_id], frozenset(fit[lead_id])) for lead_id in lead_ids}


def _decay(session: Session, at: datetime, half_life: timedelta) -> Any:
    """What a decaying entry is worth at ``at``, per point, in SQL: halved every
    ``half_life`` of age, future entries in full (as ``nurture.scoring.points.decayed``)."""
    days = half_life / timedelta(days=1)
    if session.get_bind().dialect.name == "postgresql":
        seconds = extract("epoch", literal(at, AwareDateTime()) - ScoreEntry.occurred_at)
        halvings = func.least(func.greatest(seconds / 86400.0, 0.0) / days, MAX_HALVINGS)
        return func.power(0.5, halvings)
    # SQLite: julianday() reads the stored text; power() is SQLite's math function (or
    # Python's, registered by nurture.db.session where SQLite was built without them).
    age = func.julianday(literal(at, AwareDateTime())) - func.julianday(ScoreEntry.occurred_at)
    return func.power(0.5, func.min(func.max(age, 0.0) / days, MAX_HALVINGS))


class _Entry(NamedTuple):
    """A ledger row as the core reads it (a tuple: cheaper than a dataclass per row)."""

    rule: str
    category: str
    points: float
    decays: bool
    occurred_at: datetime


def _ledger(
    session: Session, lead_ids: Sequence[int], at: datetime
) -> Iterator[tuple[int, _Entry]]:
    query = select(
        ScoreEntry.lead_id,
        ScoreEntry.rule,
        ScoreEntry.category,
        ScoreEntry.points,
        ScoreEntry.decays,
        ScoreEntry.occurred_at,
    ).where(one_of(session, ScoreEntry.lead_id, lead_ids), ScoreEntry.occurred_at <= at)
    for lead_id, rule, category, points, decays, occurred_at in session.execute(query):
        yield lead_id, _Entry(rule, category, points, decays, occurred_at)


def _silence(
    session: Session, rules: ScoringRules, lead_ids: Sequence[int], at: datetime
) -> Iterator[tuple[int, Hit]]:
    """Silence rules in effect at ``at``: from the last human engagement, or creation."""
    last = (
        select(func.max(Event.occurred_at))
        .where(
            Event.lead_id == Lead.id,
            Event.is_human.is_(True),
            Event.type.in_(sorted(ENGAGEMENT_EVENTS)),
            Event.occurred_at <= at,
        )
        .correlate(Lead)
        .scalar_subquery()
    )
    query = select(Lead.id, Lead.created_at, last).where(one_of(session, Lead.id, lead_ids))
    for lead_id, created_at, last_engagement in session.execute(query):
        for hit in silence_hits(rules, _aware(last_engagement), created_at, at):
            yield lead_id, hit


def _aware(value: datetime | None) -> datetime | None:
    # func.max() loses the column type on SQLite: the value comes back naive (UTC) or text.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value
