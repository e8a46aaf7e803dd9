"""The funnel in the database: stage changes with their history, MQL promotion and fast
tracks after scoring, sales decisions, recycling and the engine's periodic funnel pass.

Every stage change goes through :func:`change_stage`: the state machine says whether it is
allowed (a refusal changes nothing), the change is recorded with the score at that moment,
sequences the new stage ends are exited at once, and hand-offs open (with their SLA and
notifications) or close. The caller owns the transaction."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, inspect, select, update
from sqlalchemy.orm import Session

from nurture.db.batches import chunks, one_of
from nurture.db.models import Enrollment, Handoff, Lead, StageChange
from nurture.funnel import handoff as handoffs
from nurture.funnel import sla
from nurture.funnel.funnel import Funnel
from nurture.funnel.machine import (
    MARKETING_STAGES,
    Reason,
    ReasonKind,
    Refusal,
    Stage,
    TransitionRefused,
    transition,
)
from nurture.funnel.notifications import Targets, queue_notification
from nurture.funnel.spec import SLA_STAGES, LifecycleSpec
from nurture.scoring.points import ScoreBreakdown
from nurture.scoring.rules import ScoringRules
from nurture.scoring.scores import lead_score, lead_scores
from nurture.sequences.catalog import Catalog, UnknownSequenceVersion
from nurture.sequences.engine import Context, Position, goal_reached
from nurture.sequences.enrollment import enroll
from nurture.sequences.versions import LoadedSequence
from nurture.settings import Settings

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "nurture"


class StageMoved(TransitionRefused):
    """Another writer changed the lead's stage since it was read: nothing was changed."""

    def __init__(self, lead_id: int, expected: str, target: str) -> None:
        message = (
            f"lead {lead_id} is no longer {expected}: its stage changed meanwhile "
            f"(not moved to {target})"
        )
        super().__init__(Refusal(expected, target, message))


# -- the score -----------------------------------------------------------------------------


def current_score(
    session: Session, lead_id: int, now: datetime, rules: ScoringRules
) -> ScoreBreakdown:
    """The lead's score breakdown at ``now`` (scoring's ledger, decayed)."""
    return lead_score(session, lead_id, now, rules=rules)


def score_json(score: ScoreBreakdown) -> dict[str, Any]:
    return {
        "total": score.total,
        "fit": score.fit,
        "engagement": score.engagement,
        "negative": score.negative,
        "by_rule": dict(score.by_rule),
        "fit_rules": sorted(score.fit_rules),
    }


# -- stage changes -------------------------------------------------------------------------


@dataclass
class Known:
    """What stage changes of a batch of leads read, read for all of them at once: their
    active enrollments and open hand-offs. With it, a change reads nothing and writes
    nothing until the batch's one flush."""

    enrollments: dict[int, list[Enrollment]] = field(default_factory=dict)
    handoffs: dict[int, list[Handoff]] = field(default_factory=dict)

    @classmethod
    def read(cls, session: Session, lead_ids: Sequence[int]) -> Known:
        """Two queries per chunk of leads."""
        known = cls({i: [] for i in lead_ids}, {i: [] for i in lead_ids})
        for chunk in chunks(sorted(set(lead_ids))):
            active = select(Enrollment).where(
                one_of(session, Enrollment.lead_id, chunk), Enrollment.status == "active"
            )
            for enrollment in session.scalars(active.order_by(Enrollment.id)):
                known.enrollments[enrollment.lead_id].append(enrollment)
            for handoff in handoffs.open_handoffs_of(session, chunk):
                known.handoffs[handoff.lead_id].append(handoff)
        return known


def change_stage(
    session: Session,
    lead: Lead,
    target: str,
    reason: Reason,
    actor: str,
    now: datetime,
    *,
    funnel: Funnel,
    score: ScoreBreakdown | None = None,
    known: Known | None = None,
) -> StageChange:
    """Move ``lead`` to ``target`` and record it; raise TransitionRefused (nothing
    changed) when the state machine does not allow the move. ``score``: the lead's score
    at ``now`` when the caller has it already (read from the ledger otherwise). ``known``:
    the lead's enrollments and hand-offs, read beforehand with others' (then nothing is
    flushed here: the caller flushes the batch)."""
    moved = transition(lead.lifecycle_stage, target, reason, now)
    if isinstance(moved, Refusal):
        raise TransitionRefused(moved)
    _claim_stage(session, lead, moved.from_stage.value, moved.to_stage.value)
    if score is None:
        score = current_score(session, lead.id, now, funnel.rules)
    if moved.starts_new_cycle:
        lead.cycle = (lead.cycle or 1) + 1
    change = StageChange(
        lead_id=lead.id,
        from_stage=moved.from_stage.value,
        to_stage=moved.to_stage.value,
        at=now,
        reason_kind=reason.kind.value,
        reason_detail=reason.detail[:2000],
        actor=actor[:200],
        score=score.total,
        cycle=lead.cycle,
        data={**reason.data, "score": score_json(score)},
    )
    session.add(change)
    lead.lifecycle_stage = moved.to_stage.value
    lead.stage_changed_at = now
    if moved.from_stage is Stage.recycled:
        lead.recycle_until = None
    if known is None:
        session.flush()
    _after_change(session, lead, change, reason, score, now, funnel, known)
    return change


def _claim_stage(session: Session, lead: Lead, from_stage: str, to_stage: str) -> None:
    """Move the lead's row only if it is still in ``from_stage`` (in the database): of two
    writers applying the same change, the second matches no row and raises StageMoved."""
    state = inspect(lead)
    if not state.persistent:
        return  # created in this transaction: nobody else can see it yet
    written = state.attrs.lifecycle_stage.history
    # Changed here but not flushed yet: the row still holds the value read.
    in_db = written.deleted[0] if written.deleted else from_stage
    result = session.connection().execute(
        update(Lead)
        .where(Lead.id == lead.id, Lead.lifecycle_stage == in_db)
        .values(lifecycle_stage=to_stage)
    )
    if result.rowcount == 0:
        raise StageMoved(lead.id, from_stage, to_stage)


def record_entries(
    session: Session,
    entries: Sequence[tuple[Lead, Reason]],
    actor: str,
    now: datetime,
    rules: ScoringRules,
) -> int:
    """New leads' first stage, recorded as a change from none (``from_stage`` ""), with
    their score: a fixed number of statements for them all. An entry only records: no
    hand-off opens and no sequence is exited (the funnel acts on moves), so importing
    history alerts nobody. Returns how many were recorded."""
    if not entries:
        return 0
    scores = lead_scores(session, [lead.id for lead, _ in entries], now, rules=rules)
    rows = [
        {
            "lead_id": lead.id,
            "from_stage": "",
            "to_stage": lead.lifecycle_stage,
            "at": now,
            "reason_kind": reason.kind.value,
            "reason_detail": reason.detail[:2000],
            "actor": actor[:200],
            "score": scores[lead.id].total,
            "cycle": lead.cycle or 1,
            "data": {**reason.data, "score": score_json(scores[lead.id])},
        }
        for lead, reason in entries
    ]
    # Core executemany: ORM inserts fetch each new id, row by row on SQLite.
    session.execute(insert(StageChange), rows)
    return len(rows)


def refusal_of(current: str, target: str, now: datetime) -> Refusal | None:
    """Why the state machine would refuse moving from ``current`` to ``target`` (None: it
    allows it). Nothing is changed: callers check a whole row before they write any of it."""
    moved = transition(current, target, Reason(ReasonKind.system), now)
    return moved if isinstance(moved, Refusal) else None


def _after_change(
    session: Session,
    lead: Lead,
    change: StageChange,
    reason: Reason,
    score: ScoreBreakdown,
    now: datetime,
    funnel: Funnel,
    known: Known | None,
) -> None:
    """Stop what the new stage ends, settle and open hand-offs, start the stage's track."""
    active = known.enrollments.get(lead.id, []) if known else None
    exit_sequences(session, lead, change.to_stage, now, funnel, active=active)
    open_ones = known.handoffs.get(lead.id, []) if known else None
    closed = handoffs.close_handoffs(session, lead.id, change.to_stage, now, open_ones=open_ones)
    if funnel.spec is None:
        return
    late = sla.settle_closed(closed, now)
    sla.notify_breaches(session, funnel.spec, funnel.settings, late, now)
    if change.to_stage in SLA_STAGES:
        _open_handoff(
            session, lead, change, reason, score, now, funnel.spec, funnel.settings, known
        )
    track = funnel.spec.stage_sequence(change.to_stage)
    if track:
        enroll_named(session, lead, track, funnel.catalog, now)


def _open_handoff(
    session: Session,
    lead: Lead,
    change: StageChange,
    reason: Reason,
    score: ScoreBreakdown,
    now: datetime,
    spec: LifecycleSpec,
    settings: Settings,
    known: Known | None = None,
) -> None:
    kind = "fast_track" if reason.kind is ReasonKind.trigger else change.to_stage
    due = sla.due_at(spec, settings, lead, change.to_stage, now)
    notify = kind in handoffs.NOTIFY_KINDS
    if due is None and not notify:
        return
    targets = Targets.of(spec.handoff, settings)
    # Nobody to tell: no context document to build (it is only ever stored to be sent).
    notify_now = notify and bool(targets.webhooks or targets.slack)
    handoff = handoffs.open_handoff(
        session,
        lead,
        stage=change.to_stage,
        kind=kind,
        priority="hot" if reason.kind is ReasonKind.trigger else "normal",
        due_at=due,
        owner=lead.owner or spec.handoff.default_owner,
        now=now,
        flush=known is None or notify_now,  # the notification names the hand-off's id
    )
    if notify_now:
        why = {
            "reason": reason.detail,
            "rules": list(reason.data.get("rules", [])),
            "score": score_json(score),
        }
        document = handoffs.build_context(
            session, lead, handoff, why, spec.handoff.recent, settings.base_url
        )
        queue_notification(
            session,
            event=f"handoff.{kind}",
            document=document,
            targets=targets,
            lead_id=lead.id,
            handoff_id=handoff.id,
            now=now,
        )


def exit_sequences(
    session: Session,
    lead: Lead,
    stage: str,
    now: datetime,
    funnel: Funnel,
    *,
    active: Sequence[Enrollment] | None = None,
) -> list[Enrollment]:
    """Exit, now, the lead's active enrollments that ``stage`` ends (its goal, or it leaves
    the audience); a disqualified lead leaves every one. ``active``: those enrollments,
    when the caller read them already."""
    if active is None:
        query = select(Enrollment).where(
            Enrollment.lead_id == lead.id, Enrollment.status == "active"
        )
        active = list(session.scalars(query))
    exited = []
    for enrollment in active:
        reason = _exit_reason(session, enrollment, stage, funnel)
        if reason:
            _finish(enrollment, reason, now)
            exited.append(enrollment)
    return exited


def _exit_reason(session: Session, enrollment: Enrollment, stage: str, funnel: Funnel) -> str:
    if stage == Stage.disqualified:
        return "disqualified: every sequence stops"
    try:
        spec = funnel.catalog.spec(enrollment.sequence_key, enrollment.sequence_version, session)
    except UnknownSequenceVersion:
        return "" if stage in MARKETING_STAGES else f"left the audience: lifecycle stage {stage}"
    position = Position(enrollment.current_step, enrollment.entered_at)
    # The engine's own rule, applied now instead of at the enrollment's next step.
    return goal_reached(spec, position, Context(lead={"lifecycle_stage": stage}))


def _finish(enrollment: Enrollment, reason: str, now: datetime) -> None:
    enrollment.status = "exited"
    enrollment.exit_reason = reason[:200]
    enrollment.exited_at = now
    enrollment.next_run_at = None
    enrollment.claim_token = None
    enrollment.claimed_until = None


def enroll_named(
    session: Session,
    lead: Lead,
    key: str,
    catalog: Catalog,
    now: datetime,
    *,
    returning: bool = False,
) -> Enrollment | None:
    """Enroll ``lead`` in sequence ``key`` because lifecycle.yaml names it: persona and
    journey stage are not matched; every other rule is (one sequence at a time, never a
    disqualified or suppressed lead, the lifecycle stages and entry policy of the sequence)."""
    if key not in catalog:
        log.warning("lifecycle.yaml names sequence %s, which is not loaded", key)
        return None
    loaded = catalog.latest(key)
    audience = loaded.spec.audience.model_copy(
        update={"personas": [lead.persona], "journey_stages": [lead.journey_stage]}
    )
    named = loaded.spec.model_copy(update={"audience": audience})
    only = Catalog([LoadedSequence(named, loaded.path, loaded.version)])
    return enroll(session, lead, only, now, returning=returning)
