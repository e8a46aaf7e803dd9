"""One lead as a marketer looks at it: fields, stage, enrollment, score with its breakdown,
and the timeline of messages, events, score changes and stage changes. ``nurture lead show``
(newest first) and ``GET /api/v1/leads/{id}`` (in time order) both show this view, so they
show the same numbers and the same history."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.core.leads import LEAD_FIELDS
from nurture.db.models import Enrollment, Event, Lead, Message, ScoreEntry, StageChange
from nurture.scoring.points import ScoreBreakdown, entry_value
from nurture.scoring.rules import ScoringRules
from nurture.scoring.scores import lead_score
from nurture.sequences.catalog import Catalog, UnknownSequenceVersion
from nurture.sequences.enrollment import enrollment_decision
from nurture.sequences.waiting import EnrollmentState, why_waiting

DEFAULT_LIMIT = 30
# At the same instant: cause, then effect (points make an MQL).
_KIND_ORDER = {"message": 0, "event": 1, "score": 2, "stage": 3}


@dataclass(frozen=True)
class TimelineItem:
    """One line of a lead's timeline: a message, an event, a score or a stage change."""

    at: datetime
    kind: str  # message | event | score | stage
    title: str  # sequence/step, event type, rule, or "lead -> mql"
    detail: str = ""  # subject, URL or title, why the rule hit, or the change's reason
    status: str = ""  # message status; human or bot; the rule's category; who changed it
    points: float | None = None
    decayed: float | None = None  # a score change's worth at the view's time
    id: int = 0
    stage: dict[str, Any] | None = None  # a stage change: from, to, reason, actor, score
    # What integrators read of the item: a message's sequence, step and subject; an event's
    # type, human flag, message and data; a score entry's rule, category and worth now.
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The item as JSON data."""
        data: dict[str, Any] = {
            "at": self.at.isoformat(),
            "kind": self.kind,
            "title": self.title,
            "detail": self.detail,
            "status": self.status,
            "id": self.id,
        }
        if self.points is not None:
            data["points"] = self.points
            data["decayed"] = self.decayed
        if self.stage is not None:
            data.update(self.stage)
        return {**data, **self.extra}


@dataclass(frozen=True)
class EnrollmentView:
    sequence: str
    version: str
    step: str
    status: str
    next_run_at: datetime | None
    entered_at: datetime
    # Why the next step has not run yet (a wait, the window, the cap, a retry), or "".
    waiting: str = ""

    def to_json(self) -> dict[str, Any]:
        """The enrollment as JSON data."""
        return {
            "sequence": self.sequence,
            "version": self.version,
            "step": self.step,
            "status": self.status,
            "next_run_at": self.next_run_at.isoformat() if self.next_run_at else None,
            "entered_at": self.entered_at.isoformat(),
            "waiting": self.waiting,
        }


@dataclass(frozen=True)
class LeadView:
    """Everything ``lead show`` prints, as of ``at``."""

    lead_id: int
    fields: dict[str, Any]
    enrollments: list[EnrollmentView]
    score: ScoreBreakdown
    timeline: list[TimelineItem] = field(default_factory=list)
    # Without an active enrollment: why the lead is in no sequence now (cool-down, ...).
    not_enrolled: str = ""

    def to_json(self) -> dict[str, Any]:
        """The view as JSON data."""
        return {
            "id": self.lead_id,
            "lead": self.fields,
            "enrollments": [e.to_json() for e in self.enrollments],
            "not_enrolled": self.not_enrolled,
            "score": self.score.to_json(),
            "timeline": [item.to_json() for item in self.timeline],
        }


def find_lead_id(session: Session, email: str) -> int | None:
    """The id of the lead with this email (case-insensitive), or None."""
    query = select(Lead.id).where(func.lower(Lead.email) == email.strip().lower())
    return session.scalar(query)


def lead_view(
    session: Session,
    lead_id: int,
    at: datetime,
    *,
    limit: int = DEFAULT_LIMIT,
    rules: ScoringRules,
    catalog: Catalog | None = None,
    newest_first: bool = True,
    per_kind: bool = False,
) -> LeadView | None:
    """The lead as of ``at`` (its score, and the timeline up to then), or None. The
    timeline holds the newest ``limit`` items (``per_kind``: of each kind), newest first
    or in time order. ``catalog``: the sequences, to say why a step waits or why the lead
    is in none."""
    lead = session.get(Lead, lead_id)
    if lead is None:
        return None
    enrollments = _enrollments(session, lead_id, at, catalog)
    return LeadView(
        lead_id=lead.id,
        fields=_fields(lead),
        enrollments=enrollments,
        score=lead_score(session, lead_id, at, rules=rules),
        timeline=timeline(session, lead_id, at, limit, rules, newest_first, per_kind),
        not_enrolled=_not_enrolled(session, lead, at, catalog, enrollments),
    )


def _fields(lead: Lead) -> dict[str, Any]:
    values: dict[str, Any] = {name: getattr(lead, name) for name in LEAD_FIELDS}
    values["attributes"] = dict(lead.attributes or {})
    values["created_at"] = lead.created_at.isoformat()
    values["erased_at"] = lead.erased_at.isoformat() if lead.erased_at else None
    return values


def _enrollments(
    session: Session, lead_id: int, at: datetime, catalog: Catalog | None
) -> list[EnrollmentView]:
    """Active enrollments; or else the latest one, to say how the last sequence ended."""
    query = select(Enrollment).where(Enrollment.lead_id == lead_id)
    rows = list(session.scalars(query.order_by(Enrollment.entered_at.desc(), Enrollment.id.desc())))
    shown = [e for e in rows if e.status == "active"] or rows[:1]
    return [
        EnrollmentView(
            e.sequence_key,
            e.sequence_version,
            e.current_step,
            e.status if e.status == "active" else f"{e.status}: {e.exit_reason}".rstrip(": "),
            e.next_run_at,
            e.entered_at,
            _waiting(session, e, at, catalog),
        )
        for e in shown
    ]


def _waiting(session: Session, e: Enrollment, at: datetime, catalog: Catalog | None) -> str:
    state = EnrollmentState(
        e.status, e.current_step, e.next_run_at, e.last_deferral, e.claimed_until
    )
    spec = None
    if catalog is not None:
        try:
            spec = catalog.spec(e.sequence_key, e.sequence_version, session)
        except UnknownSequenceVersion:
            spec = None
    return why_waiting(state, spec, at)


def _not_enrolled(
    session: Session,
    lead: Lead,
    at: datetime,
    catalog: Catalog | None,
    enrollments: list[EnrollmentView],
) -> str:
    """Why a lead without an active enrollment is in no sequence now ("" otherwise)."""
    if catalog is None or any(e.status == "active" for e in enrollments):
        return ""
    decision = enrollment_decision(session, lead, catalog, at)
    return "" if decision.enroll else decision.detail


def timeline(
    session: Session,
    lead_id: int,
    at: datetime,
    limit: int,
    rules: ScoringRules,
    newest_first: bool = True,
    per_kind: bool = False,
) -> list[TimelineItem]:
    """The newest ``limit`` messages, events, score and stage changes up to ``at``
    (``per_kind``: ``limit`` of each)."""
    items = (
        _messages(session, lead_id, at, limit)
        + _events(session, lead_id, at, limit)
        + _score_changes(session, lead_id, at, limit, rules)
        + _stage_changes(session, lead_id, at, limit)
    )
    items.sort(key=lambda i: (i.at, _KIND_ORDER[i.kind], i.id), reverse=True)
    kept = items if per_kind else items[:limit]
    return kept if newest_first else kept[::-1]


def _messages(session: Session, lead_id: int, at: datetime, limit: int) -> list[TimelineItem]:
    query = (
        select(Message)
        .where(Message.lead_id == lead_id, Message.created_at <= at)
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(limit)
    )
    return [
        TimelineItem(
            at=m.sent_at or m.created_at,
            kind="message",
            title=f"{m.sequence_key}/{m.step_id}",
            detail=m.subject,
            status=m.status,
            id=m.id,
            extra={
                "sequence": m.sequence_key,
                "step": m.step_id,
                "subject": m.subject,
                "variant": m.variant,
            },
        )
        for m in session.scalars(query)
    ]


def _events(session: Session, lead_id: int, at: datetime, limit: int) -> list[TimelineItem]:
    query = (
        select(Event)
        .where(Event.lead_id == lead_id, Event.occurred_at <= at)
        .order_by(Event.occurred_at.desc(), Event.id.desc())
        .limit(limit)
    )
    return [
        TimelineItem(
            at=e.occurred_at,
            kind="event",
            title=e.type,
            detail=_event_detail(e),
            status=_human(e),
            id=e.id,
            extra={
                "type": e.type,
                "is_human": e.is_human,
                "message_id": e.message_id,
                "data": e.data,
            },
        )
        for e in session.scalars(query)
    ]


def _human(event: Event) -> str:
    if event.is_human:
        return "human"
    reason = (event.data or {}).get("bot_reason")
    return f"bot: {reason}" if reason else "bot"


def _event_detail(event: Event) -> str:
    data = event.data or {}
    parts = [str(data[k]) for k in ("url", "title") if data.get(k)]
    if not parts and (data.get("sequence") or data.get("step")):
        parts.append("/".join(str(data[k]) for k in ("sequence", "step") if data.get(k)))
    if data.get("content_stage"):
        parts.append(f"[{data['content_stage']}]")
    return " ".join(parts)


def _score_changes(
    session: Session, lead_id: int, at: datetime, limit: int, rules: ScoringRules
) -> list[TimelineItem]:
    query = (
        select(ScoreEntry)
        .where(ScoreEntry.lead_id == lead_id, ScoreEntry.occurred_at <= at)
        .order_by(ScoreEntry.occurred_at.desc(), ScoreEntry.id.desc())
        .limit(limit)
    )
    return [
        TimelineItem(
            at=s.occurred_at,
            kind="score",
            title=s.rule,
            detail=s.detail,
            status=s.category,
            points=s.points,
            decayed=round(entry_value(s, at, rules.half_life), 2),
            id=s.id,
            extra={
                "rule": s.rule,
                "category": s.category,
                "now_worth": round(entry_value(s, at, rules.half_life), 2),
            },
        )
        for s in session.scalars(query)
    ]


def _stage_changes(session: Session, lead_id: int, at: datetime, limit: int) -> list[TimelineItem]:
    query = (
        select(StageChange)
        .where(StageChange.lead_id == lead_id, StageChange.at <= at)
        .order_by(StageChange.at.desc(), StageChange.id.desc())
        .limit(limit)
    )
    return [_stage_item(change) for change in session.scalars(query)]


def _stage_item(change: StageChange) -> TimelineItem:
    reason = change.reason_kind + (f": {change.reason_detail}" if change.reason_detail else "")
    score = "" if change.score is None else f" (score {round(change.score, 2):g})"
    return TimelineItem(
        at=change.at,
        kind="stage",
        title=f"{change.from_stage} -> {change.to_stage}",
        detail=reason + score,
        status=f"by {change.actor}" if change.actor else "",
        id=change.id,
        stage={
            "from": change.from_stage,
            "to": change.to_stage,
            "reason": change.reason_kind,
            "reason_detail": change.reason_detail,
            "actor": change.actor,
            "score": change.score,
            "cycle": change.cycle,
        },
    )
