"""What an open, a click or an unsubscribe does to the database. Nothing is answered
before its event is committed: an event the answer acknowledged is stored.

Hits for an unknown message (or link) write nothing (the web answers 404). Hits on the mail
of an erased lead are answered but not recorded.

Opens and clicks are the web process's hot path: :func:`record_hits` records a batch of
them in a fixed number of statements (SQLAlchemy Core, statements built once), so the web
process can commit the hits that arrive together in one transaction (group commit, see
:mod:`nurture.web.capture`). On SQLite the process's writers take turns on a lock
(:attr:`HitStore.write_lock`) instead of sleeping in SQLite's busy handler."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Literal

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    any_,
    bindparam,
    delete,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from nurture.db.inserts import insert_ignoring_conflicts
from nurture.db.models import Event, Lead, Link, Message, ScoreEntry, Suppression
from nurture.tracking.bots import BotRules, Hit, burst_members, judge_click, judge_open
from nurture.tracking.unsubscribe import UnsubscribeResult, exit_unsubscribed

# Enough of a user agent to recognise it; some are kilobytes of junk.
MAX_USER_AGENT = 300

_MESSAGE_COLUMNS = (
    Message.id,
    Message.lead_id,
    Message.sequence_key,
    Message.step_id,
    Message.to_email,
    Message.sent_at,
    Message.created_at,
    Lead.erased_at,
)
_MESSAGE = (
    select(*_MESSAGE_COLUMNS)
    .join(Lead, Lead.id == Message.lead_id)
    .where(Message.id == bindparam("message_id"))
)


def _in_ids(column: Any, postgresql: bool, name: str = "ids") -> Any:
    # PostgreSQL: "= ANY(array)" keeps the SQL the same whatever the batch size, so the
    # driver prepares it once; an expanding IN list is new SQL (parsed, planned) each time.
    if postgresql:
        return column == any_(bindparam(name, type_=ARRAY(Integer)))
    return column.in_(bindparam(name, expanding=True))


@dataclass(frozen=True)
class _Statements:
    messages: Any
    messages_for_clicks: Any
    links: Any
    clicks: Any


@cache
def _statements(dialect: str) -> _Statements:
    pg = dialect == "postgresql"
    messages = (
        select(*_MESSAGE_COLUMNS)
        .join(Lead, Lead.id == Message.lead_id)
        .where(_in_ids(Message.id, pg))
        .order_by(Message.id)
    )
    return _Statements(
        messages=messages,
        # Clicks on one message are taken one at a time (a row lock on PostgreSQL; SQLite
        # writers are serialized anyway), so a scanner's parallel clicks see each other.
        messages_for_clicks=messages.with_for_update(of=Message),
        links=select(Link.message_id, Link.position, Link.url).where(_in_ids(Link.message_id, pg)),
        # The leads too, though the messages name them: with them, ix_events_lead_type_time
        # answers all three conditions, so no plan (PostgreSQL's generic plan of a new,
        # unanalyzed table included) scans the index for every recent click of anyone.
        clicks=select(Event.id, Event.message_id, Event.data, Event.occurred_at).where(
            _in_ids(Event.lead_id, pg, "leads"),
            _in_ids(Event.message_id, pg),
            Event.type == "clicked",
            Event.occurred_at >= bindparam("since"),
        ),
    )


@dataclass(frozen=True)
class _MessageRow:
    id: int
    lead_id: int
    sequence_key: str
    step_id: str
    to_email: str
    # When the mail left (or was claimed, while the send is still being recorded).
    sent_at: datetime | None
    erased: bool


class HitStore:
    """Records tracking hits on one engine (one per web process)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        sqlite = engine.dialect.name == "sqlite"
        # Shared with the process's other writers (the background scoring) on SQLite.
        self.write_lock: threading.Lock | None = threading.Lock() if sqlite else None

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """A write transaction, committed on exit (taking turns with the process's other
        writers on SQLite)."""
        with self.write_lock or nullcontext(), self.engine.begin() as conn:
            yield conn

    def unsubscribe(self, message_id: int, at: datetime) -> UnsubscribeResult | None:
        """Suppress the address the message went to, record ``unsubscribed`` and end the
        lead's active enrollments (idempotent); None if no such message."""
        with self.writing() as conn:
            message = _message(conn, message_id)
            if message is None:
                return None
            if message.erased:  # a hashed suppression already covers the address
                return UnsubscribeResult("", None)
            # Enrollment first, then suppression: the order the engine takes them in (a
            # bounce), so the two never wait on each other.
            exit_unsubscribed(conn, message.lead_id, at)
            email = message.to_email.lower()
            suppression = {"email": email, "reason": "unsubscribed", "created_at": at}
            suppression["detail"] = f"message {message_id}"
            insert_ignoring_conflicts(conn, Suppression, [suppression], conflict="email")
            data = {"sequence": message.sequence_key, "step": message.step_id}
            row = _event_row(message, "unsubscribed", at, f"unsubscribed:{message.id}", data, True)
            ids = insert_ignoring_conflicts(conn, Event, [row], conflict="dedupe_key")
        return UnsubscribeResult(email, next(iter(ids.values()), None))

    def unsubscribe_address(self, message_id: int) -> str | None:
        """The address a message went to ("" for an erased lead); None if no such message."""
        with self.engine.connect() as conn:
            message = _message(conn, message_id)
        if message is None:
            return None
        return "" if message.erased else message.to_email


@dataclass(frozen=True)
class HitRequest:
    """One open (``position`` 0) or click to record."""

    kind: Literal["opened", "clicked"]
    message_id: int
    position: int
    hit: Hit
    # False beyond the rate limits: answered (the URL is looked up) but not recorded.
    record: bool = True


@dataclass(frozen=True)
class HitOutcome:
    """What became of a hit: ``found`` False means no such message or link (404)."""

    found: bool
    url: str = ""
    event_id: int | None = None
    bot_reason: str = ""


NOT_FOUND = HitOutcome(found=False)


@dataclass
class _Click:
    position: int
    at: datetime
    event_id: int | None = None  # a stored click
    row: dict[str, Any] | None = None  # a click of this batch, not inserted yet


def record_hits(
    conn: Connection, requests: Sequence[HitRequest], rules: BotRules
) -> list[HitOutcome]:
    """Record a batch of opens and clicks in the caller's transaction, in a fixed number of
    statements; outcomes in the order of ``requests``. Hits are judged in order, so the
    clicks of one batch see each other (a scanner's burst may arrive in one batch)."""
    if not requests:
        return []
    messages = _messages(conn, requests)
    clicked = sorted({r.message_id for r in requests if r.kind == "clicked"} & set(messages))
    links = _links(conn, clicked)
    earlier = _earlier_clicks(conn, [messages[m] for m in clicked], requests, rules)
    rows: list[dict[str, Any]] = []
    outcomes: list[HitOutcome | int] = []  # an int: the index of the row to insert
    bots: dict[int, str] = {}  # stored events that turn out to be a scanner's
    for request in requests:
        message = messages.get(request.message_id)
        if request.kind == "opened":
            outcome = _open(request, message, rules, rows)
        else:
            outcome = _click(request, message, links, earlier, rules, rows, bots)
        outcomes.append(outcome)
    ids = _insert_events(conn, rows)
    for reason in set(bots.values()):
        mark_not_human(conn, [i for i, r in bots.items() if r == reason], reason)
    return [_resolved(outcome, rows, ids) for outcome in outcomes]


def _open(
    request: HitRequest, message: _MessageRow | None, rules: BotRules, rows: list[dict[str, Any]]
) -> HitOutcome | int:
    if message is None:
        return NOT_FOUND
    if message.erased or not request.record:
        return HitOutcome(True)
    reason = judge_open(rules, request.hit, message.sent_at)
    return _add_row(rows, message, request, "", reason)


def _click(
    request: HitRequest,
    message: _MessageRow | None,
    links: dict[int, dict[int, str]],
    earlier: dict[int, list[_Click]],
    rules: BotRules,
    rows: list[dict[str, Any]],
    bots: dict[int, str],
) -> HitOutcome | int:
    url = links.get(request.message_id, {}).get(request.position) if message else None
    if message is None or url is None:
        return NOT_FOUND
    if message.erased or not request.record:
        return HitOutcome(True, url)
    clicks = earlier.setdefault(message.id, [])
    history = [(c.position, c.at) for c in clicks]
    link_count = len(links[message.id])
    reason = judge_click(rules, request.hit, message.sent_at, request.position, history, link_count)
    if reason.startswith("every link"):
        for i in burst_members(rules, request.hit.at, history):
            _mark_click(clicks[i], reason, bots)
    index = _add_row(rows, message, request, url, reason)
    clicks.append(_Click(request.position, request.hit.at, row=rows[index]))
    return index


def _mark_click(click: _Click, reason: str, bots: dict[int, str]) -> None:
    if click.row is not None and click.row["is_human"]:
        click.row["is_human"] = False
        click.row["data"] = {**click.row["data"], "bot_reason": reason}
    elif click.event_id is not None:
        bots[click.event_id] = reason


def _add_row(
    rows: list[dict[str, Any]], message: _MessageRow, request: HitRequest, url: str, reason: str
) -> int:
    data = _base_data(message, request.hit)
    if request.kind == "clicked":
        data.update(position=request.position, url=url)
    if reason:
        data["bot_reason"] = reason
    # Every open and click is its own event (a unique key per hit); scoring caps repeats.
    dedupe = f"{request.kind}:{message.id}:{uuid.uuid4().hex}"
    rows.append(_event_row(message, request.kind, request.hit.at, dedupe, data, not reason))
    return len(rows) - 1


def _resolved(outcome: HitOutcome | int, rows: list[dict[str, Any]], ids: list[int]) -> HitOutcome:
    if isinstance(outcome, HitOutcome):
        return outcome
    row = rows[outcome]
    url = str(row["data"].get("url", ""))
    return HitOutcome(True, url, ids[outcome], str(row["data"].get("bot_reason", "")))


def _messages(conn: Connection, requests: Sequence[HitRequest]) -> dict[int, _MessageRow]:
    ids = sorted({r.message_id for r in requests})
    any_click = any(r.kind == "clicked" for r in requests)
    statements = _statements(conn.dialect.name)
    query = statements.messages_for_clicks if any_click else statements.messages
    rows = conn.execute(query, {"ids": ids})
    return {row.id: _message_row(row) for row in rows}


def _links(conn: Connection, message_ids: list[int]) -> dict[int, dict[int, str]]:
    found: dict[int, dict[int, str]] = {}
    if message_ids:
        for message_id, position, url in conn.execute(
            _statements(conn.dialect.name).links, {"ids": message_ids}
        ):
            found.setdefault(message_id, {})[position] = url
    return found


def _earlier_clicks(
    conn: Connection,
    messages: list[_MessageRow],
    requests: Sequence[HitRequest],
    rules: BotRules,
) -> dict[int, list[_Click]]:
    """The stored clicks that can still form a burst with this batch's clicks (on
    ``messages``)."""
    found: dict[int, list[_Click]] = {}
    if not messages or rules.burst_seconds <= 0:
        return found
    since = min(r.hit.at for r in requests) - timedelta(seconds=rules.burst_seconds)
    statement = _statements(conn.dialect.name).clicks
    leads = sorted({message.lead_id for message in messages})
    ids = [message.id for message in messages]
    rows = conn.execute(statement, {"leads": leads, "ids": ids, "since": since})
    for event_id, message_id, data, at in rows:
        position = int((data or {}).get("position", 0))
        found.setdefault(message_id, []).append(_Click(position, at, event_id=event_id))
    return found


def _insert_events(conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
    """The new events' ids, in the order of ``rows``. Every hit has a dedupe key of its own,
    so ids are matched back by key: one statement of the same text whatever the batch size
    on PostgreSQL (a multi-row VALUES is new SQL for every size, which psycopg parses in
    Python and the server plans each time: milliseconds a batch)."""
    ids = insert_ignoring_conflicts(conn, Event, rows, conflict="dedupe_key")
    return [ids[row["dedupe_key"]] for row in rows]


def mark_not_human(conn: Connection | Session, event_ids: Sequence[int], reason: str) -> None:
    """Turn events already stored as human into bot hits, and take back their points: the
    clicks of a scanner's burst look human until its last click arrives."""
    if not event_ids:
        return
    rows = conn.execute(
        select(Event.id, Event.data).where(Event.id.in_(event_ids), Event.is_human.is_(True))
    )
    for event_id, data in list(rows):
        conn.execute(
            update(Event)
            .where(Event.id == event_id)
            .values(is_human=False, data={**(data or {}), "bot_reason": reason})
        )
    conn.execute(delete(ScoreEntry).where(ScoreEntry.event_id.in_(event_ids)))


def _message(conn: Connection, message_id: int) -> _MessageRow | None:
    row = conn.execute(_MESSAGE, {"message_id": message_id}).first()
    return None if row is None else _message_row(row)


def _message_row(row: Any) -> _MessageRow:
    return _MessageRow(
        id=row.id,
        lead_id=row.lead_id,
        sequence_key=row.sequence_key,
        step_id=row.step_id,
        to_email=row.to_email,
        sent_at=row.sent_at or row.created_at,
        erased=row.erased_at is not None,
    )


def _base_data(message: _MessageRow, hit: Hit) -> dict[str, Any]:
    data: dict[str, Any] = {"sequence": message.sequence_key, "step": message.step_id}
    if hit.user_agent:
        data["user_agent"] = hit.user_agent[:MAX_USER_AGENT]
    return data


def _event_row(
    message: _MessageRow,
    event_type: str,
    at: datetime,
    dedupe: str,
    data: dict[str, Any],
    human: bool,
) -> dict[str, Any]:
    return {
        "lead_id": message.lead_id,
        "message_id": message.id,
        "type": event_type,
        "occurred_at": at,
        "dedupe_key": dedupe,
        "data": data,
        "is_human": human,
        "scored_at": None,
        "created_at": at,
    }
