"""The funnel in the database: stage changes with their history, MQL promotion and fast
tracks after scoring, sales decisions, recycling and the engine's periodic funnel pass.

Every stage change goes through :func:`change_stage`: the state machine says whether it is
allowed (a refusal changes nothing), the change is recorded with the score at that moment,
sequences the new stage ends are exited at once, and hand-offs open (with their SLA and
notifications) or close. The caller owns the transaction."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, func, insert, inspect, select, update
from sqlalchemy.orm import Session

from nurture.authoring.loaded import LoadedSequence
from nurture.core.engine import Context, Position, goal_reached
from nurture.db.models import Enrollment, Event, Handoff, Lead, ScoreEntry, StageChange
from nurture.db.session import transaction
from nurture.lifecycle.config import SLA_STAGES, LifecycleSpec, RejectReason
from nurture.lifecycle.decisions import SalesDecision, problems
from nurture.lifecycle.loading import LifecycleConfigError, load_lifecycle
from nurture.lifecycle.machine import (
    MARKETING_STAGES,
    Reason,
    ReasonKind,
    Refusal,
    Stage,
    TransitionRefused,
    transition,
)
from nurture.lifecycle.rules import (
    Assessment,
    Promotion,
    ScoreView,
    assess,
    check_rule,
    matching_exclusions,
    may_promote,
)
from nurture.scoring.rules import FIT, NEGATIVE, ScoringRules
from nurture.services import handoff as handoffs
from nurture.services import sla
from nurture.services.batches import chunks, one_of
from nurture.services.catalog import Catalog, UnknownSequenceVersion
from nurture.services.enrollment import enroll
from nurture.services.scoring import (
    ScoreBreakdown,
    lead_score,
    lead_scores,
    rules_for,
    score_ceilings,
)
from nurture.settings import Settings

if TYPE_CHECKING:
    from nurture.bootstrap import Runtime

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "nurture"
# Leads whose cool-down ended, released per pass (the rest wait for the next one).
RELEASES_PER_PASS = 500


@dataclass
class Funnel:
    """What the funnel services need: the lifecycle spec (None: no lifecycle.yaml, so no
    automatic promotion, hand-offs or SLAs), settings, and the sequences catalog."""

    spec: LifecycleSpec | None
    settings: Settings
    catalog: Catalog | None = None

    @classmethod
    def load(cls, settings: Settings, catalog: Catalog | None = None) -> Funnel:
        """The funnel of the settings' sequences folder (raises LifecycleConfigError)."""
        return cls(load_lifecycle(settings.sequences_dir), settings, catalog)

    @property
    def rules(self) -> ScoringRules:
        """The scoring rules of the settings' sequences folder (cached by the loader)."""
        return rules_for(self.settings)

    def catalog_for(self, session: Session) -> Catalog:
        if self.catalog is None:
            self.catalog = Catalog.from_db(session)
        return self.catalog


class StageMoved(TransitionRefused):
    """Another writer changed the lead's stage since it was read: nothing was changed."""

    def __init__(self, lead_id: int, expected: str, target: str) -> None:
        message = (
            f"lead {lead_id} is no longer {expected}: its stage changed meanwhile "
            f"(not moved to {target})"
        )
        super().__init__(Refusal(expected, target, message))


class DecisionRefused(ValueError):
    """A sales decision that lacks something (BANT answers, a known reason code)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name
        self.message = message


# -- the score -----------------------------------------------------------------------------


def current_score(
    session: Session, lead_id: int, now: datetime, rules: ScoringRules | None = None
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
    rules: ScoringRules | None = None,
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
        enroll_named(session, lead, track, funnel.catalog_for(session), now)


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
    targets = handoffs.Targets.of(spec.handoff, settings)
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
        handoffs.queue_notification(
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
        spec = funnel.catalog_for(session).spec(
            enrollment.sequence_key, enrollment.sequence_version, session
        )
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
    session: Session, lead: Lead, key: str, catalog: Catalog, now: datetime
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
    return enroll(session, lead, only, now)


# -- promotion after scoring ----------------------------------------------------------------


def evaluate_leads(
    session: Session, lead_ids: Sequence[int], now: datetime, funnel: Funnel | None
) -> list[StageChange]:
    """Apply the MQL rules and fast-track triggers to these leads (after scoring), with a
    fixed number of queries for the whole batch; only promotions write lead by lead."""
    if funnel is None or funnel.spec is None or not lead_ids:
        return []
    facts = _marketing_leads(session, lead_ids)
    ids = [lead.id for lead in facts]
    events = _trigger_events(session, ids, funnel.spec)
    views, exact = _score_views(session, ids, now, funnel.spec, funnel.rules)
    # Most leads of a batch have no rule or trigger holding: they are not assessed in full.
    found = {
        lead.id: _assess(lead, now, funnel.spec, events.get(lead.id, []), views[lead.id])
        for lead in facts
        if may_promote(
            funnel.spec, views[lead.id], events.get(lead.id, []), lead.stage_changed_at, now
        )
    }
    ids = [lead_id for lead_id, assessment in found.items() if assessment.promotion]
    if not ids:
        return []
    # A lead promoted by a trigger may have been judged on its ceiling: its stage change
    # records the exact score.
    exact.update(lead_scores(session, [i for i in ids if i not in exact], now, rules=funnel.rules))
    leads = session.scalars(select(Lead).where(one_of(session, Lead.id, ids)).order_by(Lead.id))
    known = Known.read(session, ids)
    changes = []
    for lead in leads:
        assessment = found[lead.id]
        assert assessment.promotion is not None
        try:
            change = _promote(
                session, lead, assessment, assessment.promotion, now, funnel, exact[lead.id], known
            )
        except TransitionRefused as exc:  # another writer moved it since it was read
            log.info("lead %s not promoted: %s", lead.id, exc)
            continue
        changes.append(change)
    if changes:
        session.flush()  # the batch's stage changes, lead updates and hand-offs together
    return changes


# What the rules read of a lead (see _lead_facts), read as plain rows: a batch's leads
# become ORM objects only when they are promoted.
FACT_COLUMNS = (
    Lead.id,
    Lead.email,
    Lead.first_name,
    Lead.last_name,
    Lead.company,
    Lead.title,
    Lead.industry,
    Lead.company_size,
    Lead.country,
    Lead.persona,
    Lead.journey_stage,
    Lead.lifecycle_stage,
    Lead.attributes,
    Lead.stage_changed_at,
    Lead.recycle_until,
)


def _marketing_leads(session: Session, lead_ids: Sequence[int]) -> list[Row[Any]]:
    """What the rules read of the leads (by id) that marketing still moves on its own."""
    leads: list[Row[Any]] = []
    for chunk in chunks(sorted(set(lead_ids))):
        query = select(*FACT_COLUMNS).where(
            one_of(session, Lead.id, chunk),
            Lead.lifecycle_stage.in_([s.value for s in MARKETING_STAGES]),
            Lead.erased_at.is_(None),
        )
        leads += session.execute(query.order_by(Lead.id))
    return leads


def _score_views(
    session: Session,
    lead_ids: Sequence[int],
    now: datetime,
    spec: LifecycleSpec,
    rules: ScoringRules,
) -> tuple[dict[int, ScoreView], dict[int, ScoreBreakdown]]:
    """What the MQL rules see of each lead's score, and the exact scores read. A lead
    whose score ceiling (the most its total and fit rules can be) satisfies no MQL rule is
    judged on its ceiling: no rule holds either way, and its ledger is not read row by row."""
    ceilings = {
        lead_id: ScoreView(ceiling.total, ceiling.fit_rules)
        for lead_id, ceiling in score_ceilings(session, lead_ids, now, rules=rules).items()
    }
    reachable = [
        lead_id
        for lead_id, ceiling in ceilings.items()
        if any(check_rule(rule, ceiling).holds for rule in spec.mql.rules)
    ]
    exact = lead_scores(session, reachable, now, rules=rules)
    views = dict(ceilings)
    for lead_id, score in exact.items():
        views[lead_id] = ScoreView(score.total, frozenset(score.fit_rules))
    return views, exact


def assess_lead(
    session: Session,
    lead: Lead,
    now: datetime,
    spec: LifecycleSpec,
    events: Sequence[tuple[str, datetime]] | None = None,
    *,
    rules: ScoringRules | None = None,
) -> Assessment:
    """What lifecycle.yaml says about the lead now (exclusions, rules, triggers)."""
    score = current_score(session, lead.id, now, rules)
    if events is None:
        events = _trigger_events(session, [lead.id], spec).get(lead.id, [])
    return _assess(lead, now, spec, events, ScoreView(score.total, frozenset(score.fit_rules)))


def _assess(
    lead: Lead | Row[Any],
    now: datetime,
    spec: LifecycleSpec,
    events: Sequence[tuple[str, datetime]],
    score: ScoreView,
) -> Assessment:
    return assess(
        spec,
        _lead_facts(lead),
        score,
        events,
        lead.stage_changed_at,
        lead.recycle_until,
        now,
    )


def _promote(
    session: Session,
    lead: Lead,
    found: Assessment,
    promotion: Promotion,
    now: datetime,
    funnel: Funnel,
    score: ScoreBreakdown,
    known: Known | None,
) -> StageChange:
    fired = [c.name for c in (*found.triggers, *found.rules) if c.holds]
    reason = Reason(
        promotion.kind,
        promotion.detail,
        {"rule": promotion.rule, "rules": fired, "hot": promotion.hot},
    )
    return change_stage(
        session,
        lead,
        promotion.target,
        reason,
        SYSTEM_ACTOR,
        now,
        funnel=funnel,
        score=score,
        known=known,
    )


def _trigger_events(
    session: Session, lead_ids: Sequence[int], spec: LifecycleSpec
) -> dict[int, list[tuple[str, datetime]]]:
    types = sorted({trigger.event for trigger in spec.fast_track})
    if not types or not lead_ids:
        return {}
    rows = session.execute(
        select(Event.lead_id, Event.type, Event.occurred_at).where(
            one_of(session, Event.lead_id, lead_ids),
            Event.type.in_(types),
            Event.is_human.is_(True),
        )
    )
    found: dict[int, list[tuple[str, datetime]]] = {}
    for lead_id, event_type, occurred_at in rows:
        if lead_id is not None:
            found.setdefault(lead_id, []).append((event_type, occurred_at))
    return found


def _lead_facts(lead: Lead | Row[Any]) -> dict[str, Any]:
    fields = ("email", "first_name", "last_name", "company", "title", "industry")
    facts: dict[str, Any] = {name: getattr(lead, name) for name in fields}
    facts.update(
        company_size=lead.company_size,
        country=lead.country,
        persona=lead.persona,
        journey_stage=lead.journey_stage,
        lifecycle_stage=lead.lifecycle_stage,
        attributes=dict(lead.attributes or {}),
    )
    return facts


# -- sales decisions -------------------------------------------------------------------------


def apply_decision(
    session: Session,
    lead: Lead,
    decision: SalesDecision,
    now: datetime,
    funnel: Funnel,
) -> StageChange:
    """Apply a sales (or CRM) decision; raise DecisionRefused or TransitionRefused (then
    nothing changed)."""
    if funnel.spec is None:
        raise DecisionRefused("decision", "no lifecycle.yaml in the sequences folder")
    for field_name, message in problems(funnel.spec, decision):
        raise DecisionRefused(field_name, message)
    refusal = transition(lead.lifecycle_stage, decision.target, Reason(ReasonKind.sales), now)
    if isinstance(refusal, Refusal):
        raise TransitionRefused(refusal)
    actor = decision.actor or "sales"
    if decision.decision == "reject":
        code = decision.reason_code
        rejected = funnel.spec.reject_reason(code)
        assert rejected is not None  # checked by problems()
        return recycle(session, lead, code, rejected, decision, actor, now, funnel)
    if decision.decision == "accept" and not lead.owner:
        lead.owner = actor
    reason = Reason(ReasonKind.sales, _detail(decision), _decision_data(decision))
    return change_stage(session, lead, decision.target, reason, actor, now, funnel=funnel)


def _detail(decision: SalesDecision) -> str:
    """``reject (timing): call back in Q3``: what the stage history shows."""
    code = f" ({decision.reason_code})" if decision.reason_code else ""
    note = f": {decision.note}" if decision.note else ""
    return f"{decision.decision}{code}{note}"


def _decision_data(decision: SalesDecision) -> dict[str, Any]:
    data: dict[str, Any] = {"decision": decision.decision}
    if decision.reason_code:
        data["reason_code"] = decision.reason_code
    if decision.note:
        data["note"] = decision.note
    if decision.bant.answered():
        data["bant"] = decision.bant.answered()
    return data


def recycle(
    session: Session,
    lead: Lead,
    code: str,
    rejected: RejectReason,
    decision: SalesDecision,
    actor: str,
    now: datetime,
    funnel: Funnel,
) -> StageChange:
    """Sales rejected the lead: back to marketing, silent for the reason's cool-down, with
    its engagement score reset or cut as the reason says."""
    until = now + rejected.cooldown.span
    data = {
        **_decision_data(decision),
        "cooldown_until": until.isoformat(),
        "renurture_sequence": rejected.sequence,
        "keep_engagement": rejected.keep_engagement,
    }
    reason = Reason(ReasonKind.sales, _detail(decision), data)
    change = change_stage(session, lead, Stage.recycled, reason, actor, now, funnel=funnel)
    lead.recycle_until = until
    lead.recycle_reason = code
    adjust_engagement(session, lead.id, rejected.keep_engagement, code, now, funnel.rules)
    return change


def adjust_engagement(
    session: Session,
    lead_id: int,
    keep: float,
    code: str,
    now: datetime,
    rules: ScoringRules | None = None,
) -> list[ScoreEntry]:
    """Cut the lead's engagement to ``keep`` of what it is worth now: one decaying ledger
    entry offsets the decaying part and one non-decaying entry the non-decaying part (rules
    with ``decays: false``), so the engagement stays at ``keep`` of itself as time passes
    and the ledger still sums exactly."""
    engagement = current_score(session, lead_id, now, rules).engagement
    if engagement <= 0:
        return []
    steady = _steady_engagement(session, lead_id, now)
    rule = "recycle:reset" if keep == 0 else f"recycle:keep-{keep:g}"
    detail = f"sales rejected ({code}): engagement {engagement:g} -> "
    entries = []
    for part, decays in ((engagement - steady, True), (steady, False)):
        points = -round(part * (1 - keep), 2)
        if points == 0:
            continue
        entries.append(
            ScoreEntry(
                lead_id=lead_id,
                event_id=None,
                category="engagement",
                rule=rule,
                points=points,
                decays=decays,
                occurred_at=now,
                created_at=now,
                detail=detail + f"{round(engagement * keep, 2):g}",
            )
        )
    session.add_all(entries)
    return entries


def _steady_engagement(session: Session, lead_id: int, now: datetime) -> float:
    """The part of the lead's engagement that never decays (worth its points forever)."""
    query = select(func.coalesce(func.sum(ScoreEntry.points), 0.0)).where(
        ScoreEntry.lead_id == lead_id,
        ScoreEntry.decays.is_(False),
        ScoreEntry.category.not_in((FIT, NEGATIVE)),
        ScoreEntry.occurred_at <= now,
    )
    return round(float(session.scalar(query) or 0.0), 2)


# -- the periodic pass --------------------------------------------------------------------


def release_recycled(session: Session, now: datetime, funnel: Funnel) -> list[int]:
    """Leads whose cool-down is over re-enter nurturing: the reason's re-nurture sequence
    (they stay ``recycled`` in it), or else back to ``lead`` and their persona's track."""
    query = select(Lead).where(
        Lead.lifecycle_stage == Stage.recycled.value,
        Lead.recycle_until.is_not(None),
        Lead.recycle_until <= now,
        Lead.erased_at.is_(None),
    )
    released = list(session.scalars(query.order_by(Lead.recycle_until).limit(RELEASES_PER_PASS)))
    catalog = funnel.catalog_for(session)
    for lead in released:
        lead.recycle_until = None
        rejected = funnel.spec.reject_reason(lead.recycle_reason) if funnel.spec else None
        track = rejected.sequence if rejected else None
        if track and enroll_named(session, lead, track, catalog, now) is not None:
            continue
        detail = f"cool-down over ({lead.recycle_reason or 'no reason'}): back to nurturing"
        reason = Reason(ReasonKind.system, detail, {"reason_code": lead.recycle_reason})
        change_stage(session, lead, Stage.lead, reason, SYSTEM_ACTOR, now, funnel=funnel)
        enroll(session, lead, catalog, now)
    return [lead.id for lead in released]


@dataclass
class FunnelReport:
    """What one funnel pass did."""

    released: int = 0
    breached: int = 0
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def funnel_pass(rt: Runtime, now: datetime, *, deliver: bool = True) -> FunnelReport:
    """The engine's periodic funnel work: end cool-downs, record SLA breaches and, with
    ``deliver``, deliver due hand-off notifications (a bounded batch: see
    :func:`deliver_notifications`). A broken lifecycle.yaml is logged, never raised."""
    report = FunnelReport()
    try:
        funnel = Funnel.load(rt.settings, rt.catalog)
    except LifecycleConfigError as exc:  # the send pass must go on
        log.error("lifecycle.yaml not usable, funnel pass skipped: %s", exc)
        report.errors.append(str(exc))
        return report
    if funnel.spec is not None:
        with transaction(rt.sessions) as session:
            report.released = len(release_recycled(session, now, funnel))
            report.breached = len(sla.mark_breaches(session, funnel.spec, rt.settings, now))
    if deliver:
        _deliver(rt, now, funnel, report)
    _log_report(report)
    return report


def deliver_notifications(rt: Runtime, now: datetime) -> FunnelReport:
    """Deliver due hand-off notifications: at most ``handoff.DELIVERIES_PER_PASS`` or
    ``handoff.PASS_SECONDS`` of them per call (the rest wait for the next one), so a slow
    receiver never holds up the send pass for long."""
    report = FunnelReport()
    try:
        funnel = Funnel.load(rt.settings, rt.catalog)
    except LifecycleConfigError as exc:
        log.error("lifecycle.yaml not usable, webhooks not delivered: %s", exc)
        report.errors.append(str(exc))
        return report
    _deliver(rt, now, funnel, report)
    _log_report(report)
    return report


def _deliver(rt: Runtime, now: datetime, funnel: Funnel, report: FunnelReport) -> None:
    spec = funnel.spec.handoff if funnel.spec else None
    attempts = spec.max_attempts if spec else 8
    # Targets' own secrets: the variables lifecycle.yaml names, read from this process.
    secrets = handoffs.target_secrets(spec, os.environ)
    sent = handoffs.deliver_due(
        rt.sessions, rt.settings, now, max_attempts=attempts, secrets=secrets
    )
    report.delivered, report.retried, report.failed = sent.delivered, sent.retried, sent.failed
    report.errors += sent.errors


def _log_report(report: FunnelReport) -> None:
    if report.released or report.breached or report.delivered or report.retried or report.failed:
        log.info(
            "funnel: %d cool-downs ended, %d SLA breaches, webhooks %d delivered, "
            "%d to retry, %d failed",
            report.released,
            report.breached,
            report.delivered,
            report.retried,
            report.failed,
        )


# -- what a salesperson sees ------------------------------------------------------------------


def lead_status(session: Session, lead: Lead, now: datetime, funnel: Funnel) -> dict[str, Any]:
    """The lead's funnel state as JSON data: stage, score, why it is or is not an MQL
    (ICP exclusions included), open hand-offs and its stage history."""
    score = current_score(session, lead.id, now, funnel.rules)
    status: dict[str, Any] = {
        "lead": handoffs.lead_json(lead, funnel.settings.base_url),
        "stage": lead.lifecycle_stage,
        "cycle": lead.cycle,
        "owner": lead.owner,
        "recycle_until": lead.recycle_until.isoformat() if lead.recycle_until else None,
        "recycle_reason": lead.recycle_reason,
        "score": score_json(score),
        "handoffs": [handoffs.handoff_json(h) for h in handoffs.open_handoffs(session, lead.id)],
        "stage_history": handoffs.stage_history(session, lead.id),
    }
    if funnel.spec is not None:
        found = assessment_json(assess_lead(session, lead, now, funnel.spec, rules=funnel.rules))
        # Trigger events count from the moment the lead entered its current stage.
        since = lead.stage_changed_at
        found["triggers_counted_since"] = since.isoformat() if since else None
        status["assessment"] = found
    return status


def assessment_json(found: Assessment) -> dict[str, Any]:
    """The assessment as JSON data (``blocked_by``: the ICP exclusion that keeps a fired
    trigger from moving the lead, None when nothing blocks it)."""
    blocked = found.exclusions[0][0] if found.exclusions else None
    return {
        "excluded": [{"name": name, "reason": reason} for name, reason in found.exclusions],
        "mql_rules": [{"name": c.name, "holds": c.holds, "why": c.why} for c in found.rules],
        "fast_track": [
            {"name": c.name, "fired": c.holds, "blocked_by": blocked, "why": c.why}
            for c in found.triggers
        ],
        "cooling_until": found.cooling_until.isoformat() if found.cooling_until else None,
        "next": (
            {"to": found.promotion.target.value, "why": found.promotion.detail}
            if found.promotion
            else None
        ),
        "why_not": found.why_not,
    }


def icp_exclusions(lead: Lead, now: datetime, spec: LifecycleSpec) -> list[str]:
    """Why the lead can never become an MQL (ICP exclusions it matches; empty: none).
    For screens such as ``nurture lead show``."""
    return [reason for _, reason in matching_exclusions(spec.exclusions, _lead_facts(lead), now)]
