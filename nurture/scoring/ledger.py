"""Scoring against the database: events become ledger entries, profile changes become fit
entries, and a lead's score at any time is read back from the ledger.

Every function here works in the caller's session and transaction, with a fixed number of
statements per batch (no query per event or per lead). Without a scoring file the rules
are empty: events are marked scored, nothing is written and every score is 0. The rules
are always handed in (the program in force: ``rt.program.scoring``)."""

from __future__ import annotations

from bisect import insort
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    Integer,
    Row,
    Table,
    and_,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session

from nurture.core.leads import LEAD_FIELDS
from nurture.db.batches import chunks, json_rows, one_of
from nurture.db.models import Event, Lead, Message, ScoreEntry
from nurture.scoring.points import (
    PROFILE,
    Hit,
    engagement_hits,
    profile_changes,
)
from nurture.scoring.repeats import repeated
from nurture.scoring.rules import EventFacts, ScoringRules

SCORE_ENTRIES = cast(Table, ScoreEntry.__table__)

# -- events -> ledger ---------------------------------------------------------------------


def score_events(
    session: Session,
    event_ids: Sequence[int],
    now: datetime,
    *,
    rules: ScoringRules,
) -> set[int]:
    """Apply the engagement and negative rules to the events not scored yet, write their
    ledger entries and mark them scored; return the leads with new human activity.

    Claiming (``scored_at``) and reading are one ``UPDATE ... RETURNING``, so two workers
    given the same ids score each event once. Non-human events are marked, never scored."""
    rows = [row for chunk in chunks(sorted(set(event_ids))) for row in _claim(session, chunk, now)]
    return score_claimed(session, rows, now, rules=rules)


class StoredEvent(NamedTuple):
    """An event as scoring reads it: a row just stored, already marked scored."""

    id: int
    lead_id: int | None
    message_id: int | None
    type: str
    occurred_at: datetime
    data: dict[str, Any] | None
    is_human: bool


def score_claimed(
    session: Session,
    rows: Sequence[StoredEvent] | Sequence[Row[Any]],  # (claimed rows have the same fields)
    now: datetime,
    *,
    rules: ScoringRules,
) -> set[int]:
    """Score events already marked scored by the caller (claimed, or stored with their
    ``scored_at`` set in this transaction); return the leads with new human activity."""
    human: list[Any] = [row for row in rows if row.is_human and row.lead_id is not None]
    if human and rules.event_rules:
        messages = _message_steps(session, human)
        repeats = repeated(session, human, rules.repeat_window)
        facts = sorted((_facts(row, messages, now, repeats) for row in human), key=_in_time_order)
        prior = _cap_history(session, rules, facts)
        _insert_hits(session, _event_hits(rules, facts, prior), now)
    return {row.lead_id for row in human}


def score_unscored(
    session: Session, now: datetime, *, limit: int = 1000, rules: ScoringRules
) -> set[int]:
    """Score up to ``limit`` events nobody scored yet (oldest first): a sweep for events
    written without the pipeline, e.g. the engine's ``bounced``."""
    query = select(Event.id).where(Event.scored_at.is_(None)).order_by(Event.id).limit(limit)
    return score_events(session, list(session.scalars(query)), now, rules=rules)


def _claim(session: Session, ids: Sequence[int], now: datetime) -> Sequence[Row[Any]]:
    claim = (
        update(Event)
        .where(one_of(session, Event.id, ids), Event.scored_at.is_(None))
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


def _message_steps(session: Session, rows: Sequence[Any]) -> dict[int, tuple[str, str]]:
    """(sequence, step) of the messages of email events whose data does not say."""
    wanted = {
        row.message_id
        for row in rows
        if row.message_id is not None
        and not ((row.data or {}).get("sequence") and (row.data or {}).get("step"))
    }
    messages: dict[int, tuple[str, str]] = {}
    for chunk in chunks(sorted(wanted)):
        query = select(Message.id, Message.sequence_key, Message.step_id)
        for message_id, sequence, step in session.execute(
            query.where(one_of(session, Message.id, chunk))
        ):
            messages[message_id] = (sequence, step)
    return messages


def _facts(
    row: Any, messages: dict[int, tuple[str, str]], now: datetime, repeats: set[int]
) -> EventFacts:
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
        repeat=row.id in repeats,
    )


def _in_time_order(event: EventFacts) -> tuple[datetime, int]:
    return event.occurred_at, event.id


Prior = dict[int, dict[str, list[datetime]]]


def _cap_history(session: Session, rules: ScoringRules, events: list[EventFacts]) -> Prior:
    """Earlier counted hits of the capped rules of these events, per lead, within the cap
    windows before them: one statement for the batch, whatever its size or time span."""
    caps = _caps_by_type(rules, {event.type for event in events})
    windows: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)
    for event in events:
        cap = caps.get(event.type)
        if cap is not None and event.lead_id is not None:
            windows[event.lead_id].append((event.occurred_at - cap[0], event.occurred_at))
    prior: Prior = defaultdict(dict)
    if not windows:
        return prior
    names = sorted(set().union(*(capped for _, capped in caps.values())))
    for lead_id, rule, at in session.execute(_history_query(session, windows, names)):
        prior[lead_id].setdefault(rule, []).append(at)
    for by_rule in prior.values():
        for times in by_rule.values():
            times.sort()
    return prior


def _caps_by_type(
    rules: ScoringRules, event_types: Iterable[str]
) -> dict[str, tuple[timedelta, frozenset[str]]]:
    """Per event type with capped rules: the widest cap window and those rules' names."""
    capped = {r.name for r in rules.capped}
    found = {}
    for event_type in event_types:
        spans = {r.name: r.cap_span for r in rules.for_event(event_type) if r.name in capped}
        if spans:
            widest = max(span or timedelta(0) for span in spans.values())
            found[event_type] = (widest, frozenset(spans))
    return found


def _history_query(
    session: Session, windows: dict[int, list[tuple[datetime, datetime]]], names: list[str]
) -> Any:
    """The counted hits of ``names`` in each lead's windows (``(start, end]``), the windows
    merged where they overlap so that no hit is read twice. The windows go to the database
    as one JSON parameter (a batch of history spanning months is one statement too), and
    each is one range of the ledger index."""
    spans = json_rows(
        session,
        [("lead_id", Integer()), ("after", SCORE_ENTRIES.c.occurred_at.type),
         ("until", SCORE_ENTRIES.c.occurred_at.type)],
        ((lead_id, start, end) for lead_id, lead_windows in windows.items()
         for start, end in _merged(lead_windows)),
    )  # fmt: skip
    entries = ScoreEntry.__table__.c
    return (
        select(entries.lead_id, entries.rule, entries.occurred_at)
        .select_from(spans)
        .join(
            SCORE_ENTRIES,
            and_(
                entries.lead_id == spans.c.lead_id,
                entries.occurred_at > spans.c.after,
                entries.occurred_at <= spans.c.until,
            ),
        )
        .where(entries.rule.in_(names), entries.points != 0, entries.event_id.is_not(None))
    )


def _merged(windows: list[tuple[datetime, datetime]]) -> Iterator[tuple[datetime, datetime]]:
    """Half-open windows ``(start, end]`` merged where they overlap or touch."""
    ordered = sorted(windows)
    start, end = ordered[0]
    for next_start, next_end in ordered[1:]:
        if next_start <= end:
            end = max(end, next_end)
            continue
        yield start, end
        start, end = next_start, next_end
    yield start, end


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
    rules: ScoringRules,
) -> None:
    """Bring the profile rules (fit, and negatives such as a free-mail domain) of these
    leads up to date: append the points of rules that now hold, take back those of rules
    that stopped holding. The ledger keeps the history, so past scores stay what they were.
    Erased leads are left alone; without a scoring file nothing is written."""
    if not rules.loaded:
        return
    for chunk in chunks(sorted(set(lead_ids))):
        held = _profile_held(session, chunk)
        query = select(Lead).where(one_of(session, Lead.id, chunk), Lead.erased_at.is_(None))
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
            one_of(session, ScoreEntry.lead_id, lead_ids),
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
