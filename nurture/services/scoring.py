"""Scoring against the database: events become ledger entries, profile changes become fit
entries, and a lead's score at any time is read back from the ledger.

Every function here works in the caller's session and transaction, with a fixed number of
statements per batch (no query per event or per lead). Without a scoring file the rules
are empty: events are marked scored, nothing is written and every score is 0."""

from __future__ import annotations

import os
from bisect import insort
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, cast

from sqlalchemy import Row, Select, Table, func, insert, select, update
from sqlalchemy.orm import Session

from nurture.db.models import Event, Lead, Message, ScoreEntry
from nurture.scoring.core import (
    PROFILE,
    Hit,
    LedgerEntry,
    ScoreBreakdown,
    breakdown,
    engagement_hits,
    profile_changes,
    silence_hits,
)
from nurture.scoring.loader import cached_rules, scoring_path
from nurture.scoring.rules import EventFacts, ScoringRules
from nurture.scoring.schema import ENGAGEMENT_EVENTS
from nurture.settings import load_settings

__all__ = [
    "ScoreBreakdown",
    "active_rules",
    "lead_score",
    "lead_scores",
    "refresh_fit",
    "score_events",
    "score_unscored",
    "use_scoring_file",
]

# Ids per IN (...): well below SQLite's and PostgreSQL's limits on bound parameters.
CHUNK = 2000
# Cap history is read for groups of events at most this far apart (a batch of history
# spanning months would otherwise read every hit of its leads in those months).
GROUP_SPAN = timedelta(days=14)
LEAD_FIELDS = (
    "email", "first_name", "last_name", "company", "title", "industry", "company_size",
    "country", "timezone", "locale", "persona", "journey_stage", "lifecycle_stage",
)  # fmt: skip

SCORE_ENTRIES = cast(Table, ScoreEntry.__table__)

_scoring_file: Path | None = None
# The configured file, with what it was worked out from (so a changed environment counts).
_configured: tuple[tuple[str | None, str], Path] | None = None


# -- which rules --------------------------------------------------------------------------


def use_scoring_file(path: Path | None) -> None:
    """Score with this file from now on (None: ``scoring.yaml`` of the configured
    sequences folder)."""
    global _scoring_file
    _scoring_file = path


def active_rules() -> ScoringRules:
    """The rules of the scoring file in use, cached and reloaded when the file changes."""
    global _configured
    if _scoring_file is not None:
        return cached_rules(_scoring_file)
    # Reading settings costs a millisecond: do it again only when what they depend on moved.
    key = (os.environ.get("NURTURE_SEQUENCES_DIR"), os.getcwd())
    if _configured is None or _configured[0] != key:
        _configured = (key, scoring_path(load_settings().sequences_dir))
    return cached_rules(_configured[1])


# -- events -> ledger ---------------------------------------------------------------------


def score_events(
    session: Session,
    event_ids: Sequence[int],
    now: datetime,
    *,
    rules: ScoringRules | None = None,
) -> set[int]:
    """Apply the engagement and negative rules to the events not scored yet, write their
    ledger entries and mark them scored; return the leads with new human activity.

    Claiming (``scored_at``) and reading are one ``UPDATE ... RETURNING``, so two workers
    given the same ids score each event once. Non-human events are marked, never scored."""
    rules = rules if rules is not None else active_rules()
    rows = [row for chunk in _chunks(sorted(set(event_ids))) for row in _claim(session, chunk, now)]
    human = [row for row in rows if row.is_human and row.lead_id is not None]
    if human and rules.event_rules:
        messages = _message_steps(session, human)
        facts = sorted((_facts(row, messages, now) for row in human), key=_in_time_order)
        prior = _cap_history(session, rules, facts)
        _insert_hits(session, _event_hits(rules, facts, prior), now)
    return {row.lead_id for row in human}


def score_unscored(
    session: Session, now: datetime, *, limit: int = 1000, rules: ScoringRules | None = None
) -> set[int]:
    """Score up to ``limit`` events nobody scored yet (oldest first): a sweep for events
    written without the pipeline, e.g. the engine's ``bounced``."""
    query = select(Event.id).where(Event.scored_at.is_(None)).order_by(Event.id).limit(limit)
    return score_events(session, list(session.scalars(query)), now, rules=rules)


def _chunks(ids: Sequence[int], size: int = CHUNK) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _claim(session: Session, ids: Sequence[int], now: datetime) -> Sequence[Row[Any]]:
    claim = (
        update(Event)
        .where(Event.id.in_(ids), Event.scored_at.is_(None))
        .values(scored_at=now)
        .returning(
            Event.id,
            Event.lead_id,
            Event.message_id,
            Event.type,
            Event.occurred_at,
            Event.data,
            Event.is_human,
        )
        .execution_options(synchronize_session=False)
    )
    return session.execute(claim).all()


def _message_steps(session: Session, rows: Sequence[Row[Any]]) -> dict[int, tuple[str, str]]:
    """(sequence, step) of the messages of email events whose data does not say."""
    wanted = {
        row.message_id
        for row in rows
        if row.message_id is not None
        and not ((row.data or {}).get("sequence") and (row.data or {}).get("step"))
    }
    messages: dict[int, tuple[str, str]] = {}
    for chunk in _chunks(sorted(wanted)):
        query = select(Message.id, Message.sequence_key, Message.step_id)
        for message_id, sequence, step in session.execute(query.where(Message.id.in_(chunk))):
            messages[message_id] = (sequence, step)
    return messages


def _facts(row: Row[Any], messages: dict[int, tuple[str, str]], now: datetime) -> EventFacts:
    """What rules see of an event; its time clamped to ``now`` (a hit is not dated after
    it was scored, so a clock running ahead cannot hide it from the score)."""
    data = row.data or {}
    sequence, step = messages.get(row.message_id, ("", "")) if row.message_id else ("", "")
    return EventFacts(
        id=row.id,
        lead_id=row.lead_id,
        type=row.type,
        occurred_at=min(row.occurred_at, now),
        data=data,
        is_human=True,
        sequence=str(data.get("sequence") or sequence),
        step=str(data.get("step") or step),
    )


def _in_time_order(event: EventFacts) -> tuple[datetime, int]:
    return event.occurred_at, event.id


Prior = dict[int, dict[str, list[datetime]]]


def _cap_history(session: Session, rules: ScoringRules, events: list[EventFacts]) -> Prior:
    """Earlier counted hits of the capped rules of these events, per lead, within the cap
    windows before them."""
    capped = {r.name: r for r in rules.capped}
    windows: list[tuple[datetime, datetime, int]] = []
    names: set[str] = set()
    for event in events:
        spans = {r.name: r.cap_span for r in rules.for_event(event.type) if r.name in capped}
        if spans and event.lead_id is not None:
            widest = max(span or timedelta(0) for span in spans.values())
            windows.append((event.occurred_at - widest, event.occurred_at, event.lead_id))
            names.update(spans)
    prior: Prior = defaultdict(dict)
    seen: set[int] = set()  # an entry may lie in the windows of two groups
    for query in _history_queries(windows, sorted(names)):
        for entry_id, lead_id, rule, at in session.execute(query):
            if entry_id not in seen:
                seen.add(entry_id)
                prior[lead_id].setdefault(rule, []).append(at)
    for by_rule in prior.values():
        for times in by_rule.values():
            times.sort()
    return prior


def _history_queries(
    windows: list[tuple[datetime, datetime, int]], names: list[str]
) -> Iterator[Select[int, int, str, datetime]]:
    """One query per group of windows close in time: live traffic is one group; a batch
    of history spanning months is a few, so the whole ledger is not read for every batch."""
    base = select(ScoreEntry.id, ScoreEntry.lead_id, ScoreEntry.rule, ScoreEntry.occurred_at)
    base = base.where(
        ScoreEntry.rule.in_(names), ScoreEntry.points != 0, ScoreEntry.event_id.is_not(None)
    )
    for start, end, leads in _groups(sorted(windows)):
        yield base.where(
            ScoreEntry.lead_id.in_(sorted(leads)),
            ScoreEntry.occurred_at > start,
            ScoreEntry.occurred_at <= end,
        )


def _groups(
    windows: list[tuple[datetime, datetime, int]],
) -> Iterator[tuple[datetime, datetime, set[int]]]:
    """Windows (sorted by start) gathered into groups spanning at most GROUP_SPAN (or two
    of the longest window)."""
    span = max([GROUP_SPAN, *(2 * (end - start) for start, end, _ in windows)])
    group: tuple[datetime, datetime, set[int]] | None = None
    for start, end, lead in windows:
        if group and end - group[0] <= span and len(group[2]) < CHUNK:
            group[2].add(lead)
            group = (group[0], max(group[1], end), group[2])
            continue
        if group:
            yield group
        group = (start, end, {lead})
    if group:
        yield group


def _event_hits(
    rules: ScoringRules, events: list[EventFacts], prior: Prior
) -> list[tuple[int, Hit]]:
    """Hits in time order; each counted hit of a capped rule joins its lead's history, so
    the next event of the batch sees it."""
    capped = {r.name for r in rules.capped}
    hits: list[tuple[int, Hit]] = []
    for event in events:
        assert event.lead_id is not None
        history = prior[event.lead_id]
        for hit in engagement_hits(rules, event, history):
            hits.append((event.lead_id, hit))
            if hit.rule in capped and not hit.capped:
                insort(history.setdefault(hit.rule, []), hit.occurred_at)
    return hits


def _insert_hits(session: Session, hits: Iterable[tuple[int, Hit]], now: datetime) -> None:
    rows = [_row(lead_id, hit, now) for lead_id, hit in hits]
    if rows:
        # Core insert of plain rows: one executemany, no ORM objects.
        session.execute(insert(SCORE_ENTRIES), rows)


def _row(lead_id: int, hit: Hit, now: datetime) -> dict[str, Any]:
    return {
        "lead_id": lead_id,
        "event_id": hit.event_id,
        "category": hit.category,
        "rule": hit.rule,
        "points": hit.points,
        "decays": hit.decays,
        "occurred_at": hit.occurred_at,
        "created_at": now,
        "detail": hit.detail,
    }


# -- profile -> ledger ---------------------------------------------------------------------


def refresh_fit(
    session: Session,
    lead_ids: Sequence[int],
    now: datetime,
    *,
    rules: ScoringRules | None = None,
) -> None:
    """Bring the profile rules (fit, and negatives such as a free-mail domain) of these
    leads up to date: append the points of rules that now hold, take back those of rules
    that stopped holding. The ledger keeps the history, so past scores stay what they were.
    Erased leads are left alone; without a scoring file nothing is written."""
    rules = rules if rules is not None else active_rules()
    if not rules.loaded:
        return
    for chunk in _chunks(sorted(set(lead_ids))):
        held = _profile_held(session, chunk)
        query = select(Lead).where(Lead.id.in_(chunk), Lead.erased_at.is_(None))
        changes = [
            (lead.id, hit)
            for lead in session.scalars(query)
            for hit in profile_changes(rules, lead_mapping(lead), held.get(lead.id, {}), now)
        ]
        _insert_hits(session, changes, now)


def lead_mapping(lead: Lead) -> dict[str, Any]:
    """The lead's fields and attributes, as rules read them."""
    values: dict[str, Any] = {name: getattr(lead, name) for name in LEAD_FIELDS}
    values["attributes"] = dict(lead.attributes or {})
    return values


def _profile_held(session: Session, lead_ids: Sequence[int]) -> dict[int, dict[str, float]]:
    """Each profile rule's current sum per lead (0 when it does not hold)."""
    query = (
        select(ScoreEntry.lead_id, ScoreEntry.rule, func.sum(ScoreEntry.points))
        .where(
            ScoreEntry.lead_id.in_(lead_ids),
            ScoreEntry.event_id.is_(None),
            ScoreEntry.detail.like(f"{PROFILE}%"),
        )
        .group_by(ScoreEntry.lead_id, ScoreEntry.rule)
    )
    held: dict[int, dict[str, float]] = defaultdict(dict)
    for lead_id, rule, total in session.execute(query):
        held[lead_id][rule] = float(total or 0)
    return held


# -- ledger -> score -----------------------------------------------------------------------


def lead_score(
    session: Session, lead_id: int, at: datetime, *, rules: ScoringRules | None = None
) -> ScoreBreakdown:
    """The lead's score at ``at`` from its ledger (entries up to ``at``), with decay and
    the silence rules; ``by_rule`` sums exactly to ``total``."""
    return lead_scores(session, [lead_id], at, rules=rules)[lead_id]


def lead_scores(
    session: Session, lead_ids: Sequence[int], at: datetime, *, rules: ScoringRules | None = None
) -> dict[int, ScoreBreakdown]:
    """:func:`lead_score` for many leads in a few queries (unknown ids score 0)."""
    rules = rules if rules is not None else active_rules()
    entries: dict[int, list[LedgerEntry]] = defaultdict(list)
    for chunk in _chunks(sorted(set(lead_ids))):
        for lead_id, entry in _ledger(session, chunk, at):
            entries[lead_id].append(entry)
        if rules.silence_rules:
            for lead_id, hit in _silence(session, rules, chunk, at):
                entries[lead_id].append(hit)
    return {
        lead_id: breakdown(entries.get(lead_id, []), at, rules.half_life) for lead_id in lead_ids
    }


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
    ).where(ScoreEntry.lead_id.in_(lead_ids), ScoreEntry.occurred_at <= at)
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
    query = select(Lead.id, Lead.created_at, last).where(Lead.id.in_(lead_ids))
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
