"""MQL promotion and fast tracks after scoring: which leads a batch of events moves, with a
fixed number of queries per batch (only promotions write lead by lead)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from nurture.db.batches import chunks, one_of
from nurture.db.models import Event, Lead, StageChange
from nurture.funnel.funnel import Funnel
from nurture.funnel.machine import (
    MARKETING_STAGES,
    Reason,
    TransitionRefused,
)
from nurture.funnel.rules import (
    Assessment,
    Promotion,
    ScoreView,
    assess,
    check_rule,
    may_promote,
)
from nurture.funnel.spec import LifecycleSpec
from nurture.funnel.stages import SYSTEM_ACTOR, Known, change_stage, current_score
from nurture.scoring.points import ScoreBreakdown
from nurture.scoring.rules import ScoringRules
from nurture.scoring.scores import lead_scores, score_ceilings

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


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


# What the rules read of a lead (see lead_facts), read as plain rows: a batch's leads
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
    rules: ScoringRules,
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
        lead_facts(lead),
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


def lead_facts(lead: Lead | Row[Any]) -> dict[str, Any]:
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
