"""Erasing a lead's personal data (right to be forgotten) while keeping the counts right.

What goes: names, company, title, attributes, the address (replaced by
``erased-<id>@erased.invalid``, a reserved domain that can never receive mail), the
address and subject of each message it was sent, bounce texts, the free-form data of its
events (URLs, titles, properties, user agents), the details of its score entries, the links
of its messages, and any plain-text suppression of its address.

The funnel goes the same way: the free text of sales decisions in the stage history
(notes, BANT answers: which were answered stays), and the payload of every hand-off
notification (who the lead is, what it read, what it was sent). A notification not sent
yet is cancelled: there is nothing left to tell.

What stays: the rows themselves (messages, events, enrollments, score entries, stage
changes, hand-offs, notifications and their attempts), with their types, statuses, times,
sequences and steps, stages, reason kinds, rules and scores, so every aggregate count and
report is unchanged; and firmographic fields that identify no one (industry, company size,
country, persona, stages).

What is added: a suppression of ``sha256:<hex>`` (the SHA-256 of the lower-cased address),
reason ``erased``. The engine, enrollment and imports match it, so the address is never
mailed or enrolled again, yet the database no longer holds it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from nurture.db.models import (
    Enrollment,
    Event,
    Handoff,
    Lead,
    Link,
    Message,
    ScoreEntry,
    StageChange,
    Suppression,
    WebhookDelivery,
)
from nurture.scoring.points import PROFILE
from nurture.suppression.keys import email_hash

ERASED_DOMAIN = "erased.invalid"
# Event data that identifies no one: kept so reports by sequence, step and bot still work.
KEPT_EVENT_DATA = frozenset(
    {"sequence", "step", "position", "reason", "bot_reason", "content_stage", "source", "until"}
)
ERASED_FIELDS = ("first_name", "last_name", "company", "title")
# Stage-change facts that identify no one (rules, codes, scores); notes and BANT answers go.
KEPT_STAGE_DATA = frozenset(
    {
        "rule",
        "rules",
        "hot",
        "score",
        "decision",
        "reason_code",
        "cooldown_until",
        "renurture_sequence",
        "keep_engagement",
        "source",
    }
)
ERASED_PAYLOAD = "(erased)"


def placeholder_email(lead_id: int) -> str:
    """The address an erased lead keeps: unique, and undeliverable by definition."""
    return f"erased-{lead_id}@{ERASED_DOMAIN}"


@dataclass(frozen=True)
class ErasureReport:
    """What an erasure changed (``already`` True: the lead had been erased before)."""

    lead_id: int
    already: bool
    messages: int = 0
    events: int = 0
    enrollments_exited: int = 0

    def to_json(self) -> dict[str, Any]:
        """The report as JSON data."""
        return {
            "lead_id": self.lead_id,
            "already_erased": self.already,
            "messages": self.messages,
            "events": self.events,
            "enrollments_exited": self.enrollments_exited,
        }


def find_lead(session: Session, email: str) -> Lead | None:
    """The lead with this address (case-insensitively), if any."""
    return session.scalar(select(Lead).where(func.lower(Lead.email) == email.strip().lower()))


def is_erased_address(session: Session, email: str) -> bool:
    """True if a lead with this address was erased (its hash is suppressed)."""
    query = select(Suppression.id).where(
        Suppression.email == email_hash(email), Suppression.reason == "erased"
    )
    return session.scalar(query) is not None


def erase_lead(session: Session, lead: Lead, now: datetime) -> ErasureReport:
    """Erase ``lead``'s personal data in the caller's transaction (idempotent)."""
    if lead.erased_at is not None:
        return ErasureReport(lead.id, already=True)
    addresses = {lead.email.lower(), *_message_addresses(session, lead.id)}
    _suppress_hashed(session, addresses, now)
    messages = _scrub_messages(session, lead.id)
    events = _scrub_events(session, lead.id)
    _scrub_score_details(session, lead.id)
    _scrub_stage_history(session, lead.id)
    _scrub_notifications(session, lead.id, now)
    exited = _exit_enrollments(session, lead.id, now)
    for name in ERASED_FIELDS:
        setattr(lead, name, "")
    lead.attributes = {}
    lead.email = placeholder_email(lead.id)
    lead.erased_at = now
    lead.updated_at = now
    session.flush()
    return ErasureReport(lead.id, False, messages, events, exited)


def _message_addresses(session: Session, lead_id: int) -> set[str]:
    query = select(Message.to_email).where(Message.lead_id == lead_id).distinct()
    return {address.lower() for address in session.scalars(query) if address}


def _suppress_hashed(session: Session, addresses: set[str], now: datetime) -> None:
    """Replace plain suppressions of the addresses by hashed ones (reason ``erased``)."""
    session.execute(delete(Suppression).where(Suppression.email.in_(sorted(addresses))))
    hashes = sorted({email_hash(address) for address in addresses})
    existing = set(session.scalars(select(Suppression.email).where(Suppression.email.in_(hashes))))
    for key in hashes:
        if key not in existing:
            session.add(Suppression(email=key, reason="erased", detail="", created_at=now))


def _scrub_messages(session: Session, lead_id: int) -> int:
    ids = list(session.scalars(select(Message.id).where(Message.lead_id == lead_id)))
    if not ids:
        return 0
    session.execute(
        update(Message)
        .where(Message.lead_id == lead_id)
        .values(to_email=placeholder_email(lead_id), subject="", error="")
    )
    # Links may carry personal data (prefilled forms); clicks on them now answer 404.
    session.execute(delete(Link).where(Link.message_id.in_(ids)))
    return len(ids)


def _scrub_events(session: Session, lead_id: int) -> int:
    count = 0
    for event in session.scalars(select(Event).where(Event.lead_id == lead_id)):
        kept = {k: v for k, v in (event.data or {}).items() if k in KEPT_EVENT_DATA}
        if kept != event.data:
            event.data = kept
        count += 1
    return count


def _scrub_score_details(session: Session, lead_id: int) -> None:
    # Details quote what matched (a title, a URL). Profile entries keep their prefix:
    # scoring tells them from event entries by it.
    profile = ScoreEntry.detail.like(f"{PROFILE}%")
    mine = ScoreEntry.lead_id == lead_id
    session.execute(update(ScoreEntry).where(mine, profile).values(detail=f"{PROFILE}(erased)"))
    session.execute(update(ScoreEntry).where(mine, ~profile).values(detail=""))


def _scrub_stage_history(session: Session, lead_id: int) -> None:
    """Keep each stage change (from, to, when, why, who decided, the score); drop the
    free text of sales decisions."""
    query = select(StageChange).where(StageChange.lead_id == lead_id)
    for change in session.scalars(query):
        data = dict(change.data or {})
        kept = {k: v for k, v in data.items() if k in KEPT_STAGE_DATA}
        if isinstance(data.get("bant"), dict):
            kept["bant"] = sorted(data["bant"])  # which were answered, not what
        if kept != data:
            change.data = kept
        if change.reason_kind == "sales":
            # "reject (timing): call back Alex in May" -> "reject (timing)"
            code = f" ({kept['reason_code']})" if kept.get("reason_code") else ""
            change.reason_detail = f"{kept.get('decision', 'decision')}{code}"


def _scrub_notifications(session: Session, lead_id: int, now: datetime) -> None:
    """Hand-off notifications about the lead keep their event, target, status and
    attempts; their payload goes, and those not delivered yet are cancelled."""
    handoffs = select(Handoff.id).where(Handoff.lead_id == lead_id).scalar_subquery()
    mine = or_(WebhookDelivery.lead_id == lead_id, WebhookDelivery.handoff_id.in_(handoffs))
    session.execute(
        update(WebhookDelivery)
        .where(mine, WebhookDelivery.status.in_(("pending", "sending")))
        .values(
            status="failed",
            next_attempt_at=None,
            claim_token=None,  # a pass sending it now records nothing
            last_error="cancelled: the lead was erased",
        )
    )
    for delivery in session.scalars(select(WebhookDelivery).where(mine)):
        delivery.payload = {"event": delivery.event, "lead": ERASED_PAYLOAD}


def _exit_enrollments(session: Session, lead_id: int, now: datetime) -> int:
    result = session.execute(
        update(Enrollment)
        .where(Enrollment.lead_id == lead_id, Enrollment.status == "active")
        .values(
            status="exited",
            exit_reason="erased",
            exited_at=now,
            next_run_at=None,
            claim_token=None,
            claimed_until=None,
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)
