"""Creating or updating one lead by email (the API's ``POST /api/v1/leads``), with the same
rules as the CSV import: only given fields overwrite, attributes merge, the fit rules are
brought up to date, then the audience rules may enroll the lead.

The lifecycle stage goes through the funnel: a new lead's first stage is recorded (reason
``api``, from none); a different stage on an existing lead is a move the state machine
must allow (:func:`nurture.funnel.stages.change_stage`: recorded, hand-offs opened or
closed, sequences the stage ends exited). A refused move refuses the whole upsert:
:class:`StageRefused` is raised before anything changes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.db.models import Enrollment, Lead
from nurture.funnel.funnel import Funnel
from nurture.funnel.loading import LifecycleConfigError
from nurture.funnel.machine import Reason, ReasonKind
from nurture.funnel.stages import change_stage, record_entries, refusal_of
from nurture.leads.schema import LeadIn
from nurture.scoring.ledger import refresh_fit
from nurture.sequences.enrollment import enroll_many

ACTOR = "api"
STAGE_FIELD = "lifecycle_stage"


class StageRefused(ValueError):
    """The upsert asks for a lifecycle stage the lead cannot move to (nothing changed)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.field = STAGE_FIELD
        self.message = message


@dataclass(frozen=True)
class UpsertResult:
    """The lead, whether it is new, and the enrollment made now (if any) or why not."""

    lead: Lead
    created: bool
    enrollment: Enrollment | None
    not_enrolled: str = ""


def upsert_lead(session: Session, given: LeadIn, now: datetime, funnel: Funnel) -> UpsertResult:
    """Create or update the lead with ``given.email`` in the caller's transaction; raise
    StageRefused (nothing changed) when the stage asked for is not a move the lead can make."""
    lead = session.scalar(select(Lead).where(func.lower(Lead.email) == given.email.lower()))
    created = lead is None
    target = None
    if lead is None:
        lead = Lead(
            **given.new_lead_values(funnel.settings.default_timezone),
            created_at=now,
            updated_at=now,
        )
        session.add(lead)
    else:
        target = _stage_move(lead, given, now)
        _update(lead, given, now)
    session.flush()
    rules = funnel.rules
    refresh_fit(session, [lead.id], now, rules=rules)
    if created:
        entry = Reason(ReasonKind.api, "created through the API", {"source": "api"})
        record_entries(session, [(lead, entry)], ACTOR, now, rules)
    elif target is not None:
        _move(session, lead, target, now, funnel)
    outcome = enroll_many(session, [lead], funnel.catalog, now)[0]
    reason = "" if outcome.enrollment else outcome.decision.outcome.value
    return UpsertResult(lead, created, outcome.enrollment, reason)


def _stage_move(lead: Lead, given: LeadIn, now: datetime) -> str | None:
    """The stage the upsert moves the lead to (None: it stays); StageRefused if the state
    machine does not allow the move."""
    target = given.provided().get(STAGE_FIELD)
    if target is None or target == lead.lifecycle_stage:
        return None
    refusal = refusal_of(lead.lifecycle_stage, target, now)
    if refusal is not None:
        raise StageRefused(refusal.message)
    return str(target)


def _move(session: Session, lead: Lead, target: str, now: datetime, funnel: Funnel) -> None:
    try:
        funnel.spec  # noqa: B018 (raises when lifecycle.yaml never loaded)
    except LifecycleConfigError as exc:
        raise StageRefused(f"lifecycle.yaml has errors, no stage can change: {exc}") from None
    reason = Reason(ReasonKind.api, "set through the API", {"source": "api"})
    change_stage(session, lead, target, reason, ACTOR, now, funnel=funnel)


def _update(lead: Lead, given: LeadIn, now: datetime) -> None:
    """Overwrite only what was given; attributes are merged; the stored email stays; the
    stage moves through the funnel (:func:`_move`)."""
    for name, value in given.provided().items():
        if name == "attributes":
            lead.attributes = {**(lead.attributes or {}), **value}
        elif name not in ("email", STAGE_FIELD):
            setattr(lead, name, value)
    lead.updated_at = now
