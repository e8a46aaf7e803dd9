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
from nurture.leads.schema import ATTRIBUTES_FIELD, LeadIn, merged_attributes
from nurture.scoring.ledger import refresh_fit
from nurture.sequences.enrollment import enroll_many

ACTOR = "api"
STAGE_FIELD = "lifecycle_stage"


class UpsertRefused(ValueError):
    """The upsert cannot be applied as asked (nothing changed); ``field`` names why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class StageRefused(UpsertRefused):
    """The upsert asks for a lifecycle stage the lead cannot move to (nothing changed)."""

    def __init__(self, message: str) -> None:
        super().__init__(STAGE_FIELD, message)


@dataclass(frozen=True)
class UpsertResult:
    """The lead, whether it is new, and the enrollment made now (if any) or why not."""

    lead: Lead
    created: bool
    enrollment: Enrollment | None
    not_enrolled: str = ""


def upsert_lead(session: Session, given: LeadIn, now: datetime, funnel: Funnel) -> UpsertResult:
    """Create or update the lead with ``given.email`` in the caller's transaction; raise
    StageRefused (nothing changed) when the stage asked for is not a move the lead can make,
    UpsertRefused when the attributes merged with the stored ones would be past the limits."""
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
    provided = given.provided()
    if ATTRIBUTES_FIELD in provided:
        try:
            # Checked before anything changes: the merged attributes, not only the given ones.
            attributes = merged_attributes(lead.attributes, provided[ATTRIBUTES_FIELD])
        except ValueError as exc:
            raise UpsertRefused(ATTRIBUTES_FIELD, str(exc)) from None
    for name, value in provided.items():
        if name == ATTRIBUTES_FIELD:
            lead.attributes = attributes
        elif name not in ("email", STAGE_FIELD):
            setattr(lead, name, value)
    lead.updated_at = now
