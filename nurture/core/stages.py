"""The stages marketers name: where a lead is in its buying journey, and in the funnel."""

from __future__ import annotations

from enum import StrEnum


class JourneyStage(StrEnum):
    awareness = "awareness"
    consideration = "consideration"
    decision = "decision"


class LifecycleStage(StrEnum):
    subscriber = "subscriber"
    lead = "lead"
    mql = "mql"
    sal = "sal"
    sql = "sql"
    opportunity = "opportunity"
    customer = "customer"
    recycled = "recycled"
    disqualified = "disqualified"


# Nurture sequences are for leads that marketing still owns.
NURTURABLE_STAGES = (LifecycleStage.subscriber, LifecycleStage.lead, LifecycleStage.recycled)
