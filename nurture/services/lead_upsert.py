"""Creating or updating one lead by email (the API's ``POST /api/v1/leads``), with the same
rules as the CSV import: only given fields overwrite, attributes merge, then the audience
rules may enroll the lead and the fit rules are brought up to date."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.db.models import Enrollment, Lead
from nurture.leads.schema import LeadIn
from nurture.services.catalog import Catalog
from nurture.services.enrollment import enroll_many
from nurture.services.scoring import refresh_fit


@dataclass(frozen=True)
class UpsertResult:
    """The lead, whether it is new, and the enrollment made now (if any) or why not."""

    lead: Lead
    created: bool
    enrollment: Enrollment | None
    not_enrolled: str = ""


def upsert_lead(
    session: Session, given: LeadIn, catalog: Catalog, now: datetime, default_timezone: str
) -> UpsertResult:
    """Create or update the lead with ``given.email`` in the caller's transaction."""
    lead = session.scalar(select(Lead).where(func.lower(Lead.email) == given.email.lower()))
    created = lead is None
    if lead is None:
        lead = Lead(**given.new_lead_values(default_timezone), created_at=now, updated_at=now)
        session.add(lead)
    else:
        _update(lead, given, now)
    session.flush()
    outcome = enroll_many(session, [lead], catalog, now)[0]
    refresh_fit(session, [lead.id], now)
    reason = "" if outcome.enrollment else outcome.decision.outcome.value
    return UpsertResult(lead, created, outcome.enrollment, reason)


def _update(lead: Lead, given: LeadIn, now: datetime) -> None:
    """Overwrite only what was given; attributes are merged; the stored email stays."""
    for name, value in given.provided().items():
        if name == "attributes":
            lead.attributes = {**(lead.attributes or {}), **value}
        elif name != "email":
            setattr(lead, name, value)
    lead.updated_at = now
