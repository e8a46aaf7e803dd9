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
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import String, func, select
from sqlalchemy.orm import Session

from nurture.db.batches import one_of
from nurture.db.inserts import insert_ignoring_conflicts
from nurture.db.models import Event, Lead, Suppression
from nurture.funnel.machine import Reason, ReasonKind
from nurture.funnel.stages import record_entries
from nurture.leads.event_schema import EventIn
from nurture.leads.schema import LeadIn
from nurture.scoring.ledger import StoredEvent, refresh_fit
from nurture.scoring.rules import ScoringRules
from nurture.suppression.keys import email_hash

UnknownEmailPolicy = Literal["create", "reject"]
# Clocks disagree a little; an event further ahead than this is refused.
FUTURE_SKEW = timedelta(minutes=5)
# Who the stage history says created a lead that arrived with its first event.
ACTOR = "events"


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
