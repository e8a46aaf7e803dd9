"""SQLAlchemy 2.x models: the database is the source of truth for every enrollment,
message, event and suppression. Same code on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from nurture.core.vocabulary import UNSCORED_TYPES
from nurture.db.types import AwareDateTime, utcnow

# Stable constraint names, so Alembic migrations are the same on every database.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: AwareDateTime,
        dict[str, Any]: JSON,
        dict[str, Any] | None: JSON,
    }


class Lead(Base):
    """A person marketing may nurture. Email is unique regardless of case."""

    __tablename__ = "leads"
    __table_args__ = (
        Index("ux_leads_email_lower", text("lower(email)"), unique=True),
        Index("ix_leads_persona_stage", "persona", "journey_stage"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    first_name: Mapped[str] = mapped_column(String(120), default="")
    last_name: Mapped[str] = mapped_column(String(120), default="")
    company: Mapped[str] = mapped_column(String(200), default="")
    title: Mapped[str] = mapped_column(String(200), default="")
    industry: Mapped[str] = mapped_column(String(120), default="")
    company_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    country: Mapped[str] = mapped_column(String(2), default="")
    timezone: Mapped[str] = mapped_column(String(64), default="")
    locale: Mapped[str] = mapped_column(String(16), default="")
    persona: Mapped[str] = mapped_column(String(64), default="")
    journey_stage: Mapped[str] = mapped_column(String(16), default="awareness")
    lifecycle_stage: Mapped[str] = mapped_column(String(16), default="lead")
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Set when the lead's personal data was erased (right to be forgotten).
    erased_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # The funnel (see nurture.funnel): which pass through it this is (1 + recycles),
    # since when the lead is at its lifecycle stage, the cool-down of a recycled lead and
    # why sales rejected it, and the salesperson who owns it.
    cycle: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    stage_changed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    recycle_until: Mapped[datetime | None] = mapped_column(nullable=True)
    recycle_reason: Mapped[str] = mapped_column(String(64), default="", server_default="")
    owner: Mapped[str] = mapped_column(String(200), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SequenceVersion(Base):
    """Every version of every sequence that was ever loaded, so enrolled leads can finish
    the version they started even after the YAML changed."""

    __tablename__ = "sequence_versions"
    __table_args__ = (UniqueConstraint("key", "version", name="uq_sequence_versions_key_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(120))
    version: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]] = mapped_column()
    source_path: Mapped[str] = mapped_column(String(500), default="")
    loaded_at: Mapped[datetime] = mapped_column(default=utcnow)


class RuleVersion(Base):
    """Every version of the scoring and lifecycle rules that was ever published, so every
    process of a deployment (a worker without the YAML folder too) decides with the same
    rules. ``document`` None records that the folder had no such file."""

    __tablename__ = "rule_versions"
    __table_args__ = (UniqueConstraint("kind", "version", name="uq_rule_versions_kind_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # scoring | lifecycle
    version: Mapped[str] = mapped_column(String(16))
    document: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    source_path: Mapped[str] = mapped_column(String(500), default="")
    loaded_at: Mapped[datetime] = mapped_column(default=utcnow)


class Enrollment(Base):
    """A lead's passage through one version of one sequence."""

    __tablename__ = "enrollments"
    __table_args__ = (
        # The scheduler's query: due active enrollments, oldest first. Costs what is due.
        Index("ix_enrollments_due", "status", "next_run_at"),
        Index("ix_enrollments_lead_sequence", "lead_id", "sequence_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    sequence_key: Mapped[str] = mapped_column(String(120))
    sequence_version: Mapped[str] = mapped_column(String(16))
    current_step: Mapped[str] = mapped_column(String(120))
    # Where the current step's clock started (end of the previous wait or send).
    step_started_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_run_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # active -> completed | exited. Claims are leases: claimed_until in the future.
    status: Mapped[str] = mapped_column(String(16), default="active")
    claim_token: Mapped[str | None] = mapped_column(String(36), nullable=True)
    claimed_until: Mapped[datetime | None] = mapped_column(nullable=True)
    entered_at: Mapped[datetime] = mapped_column(default=utcnow)
    exited_at: Mapped[datetime | None] = mapped_column(nullable=True)
    exit_reason: Mapped[str] = mapped_column(String(200), default="")
    last_deferral: Mapped[str] = mapped_column(String(200), default="")


class Message(Base):
    """One email per (enrollment, step): claimed before SMTP, marked after."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("enrollment_id", "step_id", name="uq_messages_enrollment_step"),
        Index("ix_messages_lead_created", "lead_id", "created_at"),
        Index("ix_messages_status", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    enrollment_id: Mapped[int] = mapped_column(ForeignKey("enrollments.id", ondelete="CASCADE"))
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    sequence_key: Mapped[str] = mapped_column(String(120))
    sequence_version: Mapped[str] = mapped_column(String(16))
    step_id: Mapped[str] = mapped_column(String(120))
    variant: Mapped[str] = mapped_column(String(32), default="")
    # sending -> sent | failed | bounced | unknown (crash between claim and outcome)
    status: Mapped[str] = mapped_column(String(16), default="sending")
    to_email: Mapped[str] = mapped_column(String(320), default="")
    subject: Mapped[str] = mapped_column(String(500), default="")
    message_id: Mapped[str] = mapped_column(String(250), default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(nullable=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# Events still to score (the engine's bookkeeping events are never scored). Queries that
# look for them use this exact text, so that SQLite uses the partial index ix_events_unscored.
UNSCORED_EVENTS = "scored_at IS NULL AND type NOT IN ({})".format(
    ", ".join(f"'{kind}'" for kind in UNSCORED_TYPES)
)


class Event(Base):
    """Everything that happens to a lead or a message, in one vocabulary
    (sent, deferred, bounced, opened, clicked, unsubscribed, page_visit, ...)."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("dedupe_key", name="uq_events_dedupe_key"),
        Index("ix_events_lead_type_time", "lead_id", "type", "occurred_at"),
        Index("ix_events_message", "message_id"),
        Index(
            "ix_events_unscored",
            "id",
            postgresql_where=text(UNSCORED_EVENTS),
            sqlite_where=text(UNSCORED_EVENTS),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int | None] = mapped_column(
        ForeignKey("leads.id", ondelete="CASCADE"), nullable=True
    )
    message_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="SET NULL"), nullable=True
    )
    type: Mapped[str] = mapped_column(String(40))
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    dedupe_key: Mapped[str] = mapped_column(String(200))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # False for bots, scanners and privacy-proxy prefetches: recorded, never scored.
    is_human: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # When scoring rules were applied to this event (None: not scored yet).
    scored_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Link(Base):
    """A link the engine put in a message: the click redirect goes only to these URLs."""

    __tablename__ = "links"
    __table_args__ = (UniqueConstraint("message_id", "position", name="uq_links_message_position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ScoreEntry(Base):
    """The score ledger: one row per rule hit, with its points and time. A lead's score at
    any time is computed from these rows (with decay for engagement), never stored."""

    __tablename__ = "score_entries"
    __table_args__ = (
        # Holds every column a score reads: scores are computed from the index alone.
        Index(
            "ix_score_entries_ledger",
            "lead_id",
            "occurred_at",
            "points",
            "decays",
            "category",
            "rule",
        ),
        Index("ix_score_entries_event", "event_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    event_id: Mapped[int | None] = mapped_column(
        ForeignKey("events.id", ondelete="SET NULL"), nullable=True
    )
    # fit (does not decay), engagement (decays), negative
    category: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str] = mapped_column(String(120))
    points: Mapped[float] = mapped_column(Float)
    decays: Mapped[bool] = mapped_column(Boolean, default=False)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    detail: Mapped[str] = mapped_column(Text, default="")


class Suppression(Base):
    """Addresses that get nothing, across every sequence. Stored lower-cased."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("email", name="uq_suppressions_email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    reason: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# -- the funnel: stage history, hand-offs to sales and their notifications ---------------


class StageChange(Base):
    """One lifecycle transition: from, to, when, why, by whom, and the score at that moment."""

    __tablename__ = "stage_changes"
    __table_args__ = (Index("ix_stage_changes_lead_at", "lead_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    from_stage: Mapped[str] = mapped_column(String(16))
    to_stage: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column()
    # rule | trigger | sales | import | system
    reason_kind: Mapped[str] = mapped_column(String(16))
    reason_detail: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(200), default="")
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The pass through the funnel (the lead's cycle when the change happened).
    cycle: Mapped[int] = mapped_column(Integer, default=1)
    # Extra facts: rules that fired, the sales reason code, BANT answers, the score parts.
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Handoff(Base):
    """A lead waiting for sales in one stage (an MQL to accept, an SAL to qualify), with
    its SLA: due by ``due_at``, closed by the next stage change, breached when late."""

    __tablename__ = "handoffs"
    __table_args__ = (
        Index("ix_handoffs_lead", "lead_id"),
        Index("ix_handoffs_open_due", "closed_at", "due_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    # mql | fast_track | sal
    kind: Mapped[str] = mapped_column(String(16))
    # The stage the lead waits in (mql, sal, sql) and how urgent it is (normal | hot).
    stage: Mapped[str] = mapped_column(String(16))
    priority: Mapped[str] = mapped_column(String(16), default="normal")
    opened_at: Mapped[datetime] = mapped_column()
    due_at: Mapped[datetime | None] = mapped_column(nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # The stage the lead left to (sal, sql, recycled, disqualified, ...); "" while open.
    outcome: Mapped[str] = mapped_column(String(32), default="")
    breached_at: Mapped[datetime | None] = mapped_column(nullable=True)
    owner: Mapped[str] = mapped_column(String(200), default="")
    cycle: Mapped[int] = mapped_column(Integer, default=1)


class WebhookDelivery(Base):
    """One notification to one target (a signed JSON webhook or a Slack-style message),
    sent by the engine's pass with retries; claimed like enrollments (a lease)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_handoff", "handoff_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    handoff_id: Mapped[int | None] = mapped_column(
        ForeignKey("handoffs.id", ondelete="CASCADE"), nullable=True
    )
    lead_id: Mapped[int | None] = mapped_column(
        ForeignKey("leads.id", ondelete="CASCADE"), nullable=True
    )
    # handoff.mql, handoff.fast_track, sla.breached
    event: Mapped[str] = mapped_column(String(40))
    # webhook (signed JSON) | slack
    target_kind: Mapped[str] = mapped_column(String(16))
    target_url: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # pending -> sending -> delivered | failed (gave up); sending again after a lost lease
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(nullable=True)
    claim_token: Mapped[str | None] = mapped_column(String(36), nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(nullable=True)


class WebhookAttempt(Base):
    """Every try of a delivery: when, the HTTP status (if any) and the error."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column()
    # delivered | retry | failed
    status: Mapped[str] = mapped_column(String(16))
    response_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
