"""Ingesting behavior from outside the mail (the API, ``nurture events import``): validate,
resolve each email to a lead (creating it, or rejecting the event, per configuration),
store the events with their dedupe keys, then hand the new ones to the pipeline.

A batch is one transaction and a fixed number of statements whatever its size. Storing is
idempotent: an event whose dedupe key is already stored is reported as a duplicate.

Dedupe keys: a caller's key is stored as ``api:<key>`` (so a caller can never collide with
the engine's own keys); without one, the key is ``api:sha256:<hex>`` of the event's
content (email lower-cased, type, occurred_at in UTC, url, title, content stage and
properties), so sending the same event twice stores it once. An event without
``occurred_at`` is stamped with the time it arrives, which is part of that hash: send a
dedupe key or an ``occurred_at`` when a retry must not count twice.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import JSON, Connection, String, Table, Text, bindparam, cast, column, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from nurture.core.vocabulary import SITE_EVENTS
from nurture.db.batches import json_value, one_of
from nurture.db.models import Base, Event, Lead, Suppression
from nurture.funnel.machine import Reason, ReasonKind
from nurture.funnel.stages import record_entries
from nurture.leads.erasure import email_hash
from nurture.leads.schema import LeadIn, check_one_line, check_text, normalize_email
from nurture.scoring.ledger import StoredEvent, refresh_fit
from nurture.scoring.rules import ScoringRules

# Site behavior the API takes. Delivery and email engagement events (sent, opened,
# clicked, unsubscribed, ...) are written by the engine and the tracking endpoints only.
API_EVENT_TYPES = SITE_EVENTS
# Spelled out for pydantic and the OpenAPI enum; a test keeps it equal to SITE_EVENTS.
EventType = Literal[
    "page_visit",
    "content_download",
    "webinar_registered",
    "webinar_attended",
    "form_submitted",
    "pricing_page_view",
    "demo_requested",
    "contact_sales_requested",
]
ContentStage = Literal["awareness", "consideration", "decision"]
UnknownEmailPolicy = Literal["create", "reject"]
# Batches larger than this are refused (split them): one batch is one transaction.
MAX_BATCH = 5000
# Clocks disagree a little; an event further ahead than this is refused.
FUTURE_SKEW = timedelta(minutes=5)
MAX_DEDUPE_KEY = 190  # stored with the "api:" prefix in a 200-character column
MAX_PROPERTIES_BYTES = 16_000
# Who the stage history says created a lead that arrived with its first event.
ACTOR = "events"


class EventIn(BaseModel):
    """One behavior event, as the API and ``nurture events import`` take it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    email: str = Field(
        max_length=320, description="The lead's address (matched case-insensitively)."
    )
    type: EventType
    occurred_at: AwareDatetime | None = Field(
        default=None, description="When it happened, with a time zone (default: when received)."
    )
    dedupe_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_DEDUPE_KEY,
        description="Your unique id of the event; default: a hash of its content.",
    )
    url: str = Field(default="", max_length=2000)
    title: str = Field(default="", max_length=500)
    content_stage: ContentStage | None = Field(
        default=None, description="Stage of the content: awareness, consideration or decision."
    )
    properties: dict[str, Any] = Field(default_factory=dict)

    @field_validator("email", "url", "title", "dedupe_key", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return check_one_line(value)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return _normalized_email(value)

    @field_validator("content_stage", mode="before")
    @classmethod
    def _stage(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip().lower() or None
        return value

    @field_validator("properties")
    @classmethod
    def _properties(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_json(value)
        size = len(json.dumps(value, ensure_ascii=False).encode("utf-8"))
        if size > MAX_PROPERTIES_BYTES:
            raise ValueError(f"are {size} bytes as JSON; at most {MAX_PROPERTIES_BYTES}")
        return value


@lru_cache(maxsize=16_384)
def _normalized_email(value: str) -> str:
    # A batch names the same leads again and again, and the check costs ~40 µs: a pure
    # function of the text, remembered (an invalid address raises, which is not cached).
    return normalize_email(value)


def _check_json(value: Any) -> None:
    """Refuse text the database cannot store anywhere inside a JSON value."""
    if isinstance(value, str):
        check_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(str(key))
            _check_json(item)
    elif isinstance(value, list):
        for item in value:
            _check_json(item)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("NaN and Infinity are not JSON")


class EventBatch(BaseModel):
    """Several events in one request: one transaction."""

    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)


@dataclass(frozen=True)
class EventResult:
    """What happened to one event of a batch (``index`` counts from 0)."""

    index: int
    status: Literal["created", "duplicate", "rejected"]
    event_id: int | None = None
    lead_id: int | None = None
    errors: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The result as JSON data; error fields are named as in the batch body
        (``events[3].email``)."""
        data: dict[str, Any] = {"index": self.index, "status": self.status}
        if self.event_id is not None:
            data["event_id"] = self.event_id
        if self.lead_id is not None:
            data["lead_id"] = self.lead_id
        if self.errors:
            data["errors"] = [
                {"field": f"events[{self.index}].{f}", "message": m} for f, m in self.errors
            ]
        return data


@dataclass
class IngestReport:
    """The results of a batch, in order, and the new events for the pipeline."""

    results: list[EventResult] = field(default_factory=list)
    leads_created: int = 0
    # The events inserted, as scoring reads them (for processing in the same transaction).
    stored: list[StoredEvent] = field(default_factory=list)

    @property
    def new_event_ids(self) -> list[int]:
        return [r.event_id for r in self.results if r.status == "created" and r.event_id]

    def count(self, status: str) -> int:
        """How many events had ``status`` (created, duplicate or rejected)."""
        return sum(1 for r in self.results if r.status == status)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON data."""
        return {
            "created": self.count("created"),
            "duplicates": self.count("duplicate"),
            "rejected": self.count("rejected"),
            "leads_created": self.leads_created,
            "results": [r.to_json() for r in self.results],
        }


def store_events(
    session: Session,
    events: Sequence[EventIn],
    *,
    now: datetime,
    unknown_email: UnknownEmailPolicy,
    default_timezone: str,
    first_index: int = 0,
    mark_scored: bool = False,
    rules: ScoringRules,
) -> IngestReport:
    """Store a batch in the caller's transaction; the report says what became of each.
    ``mark_scored``: the events are stored with ``scored_at`` = ``now``, for a caller that
    scores ``report.stored`` in the same transaction. ``rules``: the scoring rules leads
    created here are fit scored with."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    report = IngestReport()
    leads = _resolve_leads(session, events, now, unknown_email, default_timezone, report, rules)
    rows: dict[str, tuple[int, dict[str, Any]]] = {}
    outcome: dict[int, EventResult] = {}
    latest = now + FUTURE_SKEW
    for offset, event in enumerate(events):
        index = first_index + offset
        rejected = _reject(event, leads, latest)
        if rejected:
            outcome[index] = EventResult(index, "rejected", errors=(rejected,))
            continue
        row = event_row(event, int(leads[event.email.lower()]), now)
        if row["dedupe_key"] in rows:  # the same event twice in one batch
            outcome[index] = EventResult(index, "duplicate", lead_id=row["lead_id"])
            continue
        if mark_scored:
            row["scored_at"] = now
        rows[row["dedupe_key"]] = (index, row)
    inserted = insert_ignoring_conflicts(
        session, Event, [row for _, row in rows.values()], conflict="dedupe_key"
    )
    for key, (index, row) in rows.items():
        status: Literal["created", "duplicate"] = "created" if key in inserted else "duplicate"
        outcome[index] = EventResult(index, status, inserted.get(key), row["lead_id"])
    report.results = [outcome[first_index + i] for i in range(len(events))]
    report.stored = [
        _stored(inserted[key], row) for key, (_, row) in rows.items() if key in inserted
    ]
    return report


def _stored(event_id: int, row: dict[str, Any]) -> StoredEvent:
    return StoredEvent(
        event_id,
        row["lead_id"],
        row["message_id"],
        row["type"],
        row["occurred_at"],
        row["data"],
        row["is_human"],
    )


def event_row(event: EventIn, lead_id: int, now: datetime) -> dict[str, Any]:
    """The events-table row of a validated event."""
    occurred_at = (event.occurred_at or now).astimezone(UTC)
    data: dict[str, Any] = {"source": "api"}
    for name in ("url", "title", "content_stage"):
        value = getattr(event, name)
        if value:
            data[name] = value
    if event.properties:
        data["properties"] = event.properties
    return {
        "lead_id": lead_id,
        "message_id": None,
        "type": event.type,
        "occurred_at": occurred_at,
        "dedupe_key": dedupe_key(event, occurred_at),
        "data": data,
        "is_human": True,
        "created_at": now,
    }


def dedupe_key(event: EventIn, occurred_at: datetime) -> str:
    """The stored dedupe key: the caller's, or a hash of the event's content."""
    if event.dedupe_key:
        return f"api:{event.dedupe_key}"
    content = {
        "email": event.email.lower(),
        "type": event.type,
        "occurred_at": occurred_at.astimezone(UTC).isoformat(),
        "url": event.url,
        "title": event.title,
        "content_stage": event.content_stage or "",
        "properties": event.properties,
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "api:sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _reject(
    event: EventIn, leads: dict[str, int | str], latest: datetime
) -> tuple[str, str] | None:
    """Why the event is refused (field, message), if it is: its email has no lead, or it
    happened after ``latest`` (now, plus the clock skew allowed)."""
    lead = leads.get(event.email.lower())
    if isinstance(lead, str):
        return ("email", lead)
    if event.occurred_at is not None and event.occurred_at > latest:
        return ("occurred_at", f"{event.occurred_at.isoformat()} is in the future")
    return None


def _resolve_leads(
    session: Session,
    events: Sequence[EventIn],
    now: datetime,
    policy: UnknownEmailPolicy,
    default_timezone: str,
    report: IngestReport,
    rules: ScoringRules,
) -> dict[str, int | str]:
    """Lead id by lower-cased email, or the reason the email has no lead (a str)."""
    emails = sorted({event.email.lower() for event in events})
    found: dict[str, int | str] = dict(_lead_ids(session, emails))
    missing = [email for email in emails if email not in found]
    if not missing:
        return found
    erased = _erased(session, missing)
    for email in erased:
        found[email] = "the address was erased (right to be forgotten): its events are not stored"
    unknown = [email for email in missing if email not in erased]
    if policy == "reject":
        for email in unknown:
            found[email] = "no lead has this email (NURTURE_UNKNOWN_EMAIL_EVENTS=reject)"
        return found
    given = {event.email.lower(): event.email for event in events}
    rows = [_new_lead(given[email], default_timezone, now) for email in unknown]
    created = insert_ignoring_conflicts(session, Lead.__table__, rows, conflict="email")
    report.leads_created = len(created)
    found.update(_lead_ids(session, unknown))  # also those another request just created
    # Profile rules (a free-mail domain, say) apply to a lead from its first event on.
    refresh_fit(session, sorted(created.values()), now, rules=rules)
    _record_first_stages(session, sorted(created.values()), now, rules)
    return found


def _record_first_stages(
    session: Session, lead_ids: Sequence[int], now: datetime, rules: ScoringRules
) -> None:
    """A lead created by an event starts its stage history like any other (from none)."""
    if not lead_ids:
        return
    reason = Reason(ReasonKind.api, "created by an event for an unknown email", {"source": "event"})
    leads = session.scalars(select(Lead).where(one_of(session, Lead.id, lead_ids)))
    record_entries(session, [(lead, reason) for lead in leads], ACTOR, now, rules)


def _lead_ids(session: Session, emails: Sequence[str]) -> list[tuple[str, int]]:
    if not emails:
        return []
    lower = func.lower(Lead.email)
    query = select(lower, Lead.id).where(one_of(session, lower, emails, String()))
    return [(email, lead_id) for email, lead_id in session.execute(query)]


def _erased(session: Session, emails: Sequence[str]) -> set[str]:
    hashes = {email_hash(email): email for email in emails}
    query = select(Suppression.email).where(
        Suppression.email.in_(list(hashes)), Suppression.reason == "erased"
    )
    return {hashes[key] for key in session.scalars(query)}


def _new_lead(email: str, default_timezone: str, now: datetime) -> dict[str, Any]:
    values = LeadIn(email=email).new_lead_values(default_timezone)
    return {**values, "created_at": now, "updated_at": now}


def _insert(session: Session | Connection, table: Any) -> Any:
    """INSERT with ON CONFLICT support, in the session's dialect."""
    if _dialect(session) == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def insert_ignoring_conflicts(
    session: Session | Connection, table: Any, rows: Sequence[dict[str, Any]], *, conflict: str
) -> dict[Any, int]:
    """Insert ``rows`` in one statement, skipping any that would break a unique constraint
    (already stored, or just stored by a concurrent request); returns the id of each row
    inserted, by its value of the ``conflict`` column."""
    if not rows:
        return {}
    if isinstance(table, type) and issubclass(table, Base):
        table = table.__table__
    column = table.c[conflict]
    if len(rows) > 1 and _dialect(session) == "postgresql":
        statement = _json_insert(table, rows)
        result = session.execute(statement.returning(table.c.id, column))
    else:
        statement = _insert(session, table).on_conflict_do_nothing()
        result = session.execute(statement.returning(table.c.id, column), list(rows))
    return {value: int(row_id) for row_id, value in result}


def _json_insert(table: Table, rows: Sequence[dict[str, Any]]) -> Any:
    """``INSERT ... SELECT * FROM json_to_recordset(:rows) ... ON CONFLICT DO NOTHING`` on
    PostgreSQL: the rows travel as one JSON text (encoded in C by the json module, parsed
    in C by the server), and the statement's text is the same whatever the batch size, so
    psycopg parses it and the server plans it once. A multi-row VALUES is rows x columns
    parameters that psycopg parses in Python for every batch; arrays per column
    (``unnest``) are dumped value by value in Python."""
    names = list(rows[0])
    document = json.dumps(rows, default=json_value, ensure_ascii=False)
    records = (
        func.json_to_recordset(cast(bindparam("rows", document, type_=Text()), JSON()))
        .table_valued(*(column(name, table.c[name].type) for name in names))
        .render_derived(with_types=True)
    )
    source = select(*(records.c[name] for name in names))
    return postgresql.insert(table).from_select(names, source).on_conflict_do_nothing()


def _dialect(session: Session | Connection) -> str:
    bind = session if isinstance(session, Connection) else session.get_bind()
    return bind.dialect.name
