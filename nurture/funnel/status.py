"""What a salesperson sees of a lead: its stage, score, why it is or is not an MQL, open hand-
offs and its stage history."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from nurture.db.models import Lead
from nurture.funnel import handoff as handoffs
from nurture.funnel.funnel import Funnel
from nurture.funnel.promotion import assess_lead, lead_facts
from nurture.funnel.rules import (
    Assessment,
    matching_exclusions,
)
from nurture.funnel.spec import LifecycleSpec
from nurture.funnel.stages import current_score, score_json

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


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
    return [reason for _, reason in matching_exclusions(spec.exclusions, lead_facts(lead), now)]
