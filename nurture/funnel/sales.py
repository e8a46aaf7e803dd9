"""Sales decisions (accept, qualify with BANT, reject, disqualify) and recycling: a rejected
lead goes back to marketing, silent for its reason's cool-down, then re-enters nurturing."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.db.models import Lead, ScoreEntry, StageChange
from nurture.funnel.decisions import SalesDecision, problems
from nurture.funnel.funnel import Funnel
from nurture.funnel.machine import (
    Reason,
    ReasonKind,
    Refusal,
    Stage,
    TransitionRefused,
    transition,
)
from nurture.funnel.spec import RejectReason
from nurture.funnel.stages import SYSTEM_ACTOR, change_stage, current_score, enroll_named
from nurture.scoring.rules import FIT, NEGATIVE, ScoringRules
from nurture.sequences.enrollment import enroll

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


# Leads whose cool-down ended, released per pass (the rest wait for the next one).
RELEASES_PER_PASS = 500


class DecisionRefused(ValueError):
    """A sales decision that lacks something (BANT answers, a known reason code)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name
        self.message = message


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
        "renurture_sequence": rejected.sequence_for(lead.persona),
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
    rules: ScoringRules,
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
    for their persona, or its generic one (they stay ``recycled`` in it); a reason without
    one sends them back to ``lead`` and the track of their persona and journey stage. The
    cool-down sales gave counts as that track's own: it admits them at once (a track with
    ``entry: once`` they went through does not; ``nurture validate`` warns of it)."""
    query = select(Lead).where(
        Lead.lifecycle_stage == Stage.recycled.value,
        Lead.recycle_until.is_not(None),
        Lead.recycle_until <= now,
        Lead.erased_at.is_(None),
    )
    released = list(session.scalars(query.order_by(Lead.recycle_until).limit(RELEASES_PER_PASS)))
    catalog = funnel.catalog
    for lead in released:
        lead.recycle_until = None
        rejected = funnel.spec.reject_reason(lead.recycle_reason) if funnel.spec else None
        track = rejected.sequence_for(lead.persona) if rejected else None
        if track and enroll_named(session, lead, track, catalog, now, returning=True):
            continue
        detail = f"cool-down over ({lead.recycle_reason or 'no reason'}): back to nurturing"
        reason = Reason(ReasonKind.system, detail, {"reason_code": lead.recycle_reason})
        change_stage(session, lead, Stage.lead, reason, SYSTEM_ACTOR, now, funnel=funnel)
        enroll(session, lead, catalog, now, returning=True)
    return [lead.id for lead in released]
