"""Enrolling leads into the sequence their audience rules pick (:mod:`nurture.sequences.audience`).

The caller owns the transaction. A batch costs a fixed number of queries whatever its size:
one to lock the leads (PostgreSQL; SQLite writers are serialized anyway), one for their
enrollment histories, one for suppressions, one insert and one read of the new enrollments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from nurture.db.models import Enrollment, Lead, Suppression
from nurture.sequences.audience import EnrollmentDecision, Outcome, PastEnrollment, choose_sequence
from nurture.sequences.catalog import Catalog
from nurture.sequences.spec import SequenceSpec
from nurture.suppression.keys import suppression_keys


@dataclass(frozen=True)
class EnrollmentOutcome:
    """What happened to one lead: the decision, and the enrollment if one was made."""

    lead: Lead
    decision: EnrollmentDecision
    enrollment: Enrollment | None


def enroll(
    session: Session, lead: Lead, catalog: Catalog, now: datetime, *, returning: bool = False
) -> Enrollment | None:
    """Enroll one lead into its matching sequence; None if the rules keep it out.
    ``returning``: it comes back from recycling (no sequence cool-down applies)."""
    return enroll_many(session, [lead], catalog, now, returning=returning)[0].enrollment


def enroll_many(
    session: Session,
    leads: Sequence[Lead],
    catalog: Catalog,
    now: datetime,
    *,
    returning: bool = False,
) -> list[EnrollmentOutcome]:
    """Enroll each lead that the audience rules admit; one outcome per lead, in order."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not leads:
        return []
    session.flush()  # new leads need their ids
    ids = [lead.id for lead in leads]
    _lock_leads(session, ids)
    histories = _histories(session, ids)
    suppressed = _suppressed(session, [lead.email for lead in leads])
    specs = catalog.specs()
    decisions = []
    starts: dict[int, dict[str, object]] = {}
    for lead in leads:
        history = histories.setdefault(lead.id, [])
        decision = _decide(
            lead, lead.email.lower() in suppressed, specs, history, now, returning=returning
        )
        if decision.enroll:
            starts[lead.id] = _start(lead, decision, catalog, now)
            # A lead listed twice in one batch must not enter twice.
            history.append(PastEnrollment(decision.sequence_key, "active", now, None))
        decisions.append(decision)
    created = _insert(session, list(starts.values()))
    return [
        EnrollmentOutcome(lead, decision, created.get(lead.id) if decision.enroll else None)
        for lead, decision in zip(leads, decisions, strict=True)
    ]


def enrollment_decision(
    session: Session, lead: Lead, catalog: Catalog, now: datetime
) -> EnrollmentDecision:
    """What the audience rules say of ``lead`` now, without enrolling it: which sequence it
    would enter, or why none (in cool-down until when, entered once already, ...)."""
    history = _histories(session, [lead.id]).get(lead.id, [])
    suppressed = lead.email.lower() in _suppressed(session, [lead.email])
    return _decide(lead, suppressed, catalog.specs(), history, now, returning=False)


def _decide(
    lead: Lead,
    suppressed: bool,
    specs: Sequence[SequenceSpec],
    history: Sequence[PastEnrollment],
    now: datetime,
    *,
    returning: bool,
) -> EnrollmentDecision:
    if suppressed:
        return EnrollmentDecision(Outcome.suppressed, "the address is suppressed")
    return choose_sequence(
        specs,
        lead.persona,
        lead.journey_stage,
        lead.lifecycle_stage,
        history,
        now,
        recycle_until=lead.recycle_until,
        returning=returning,
    )


def _start(
    lead: Lead, decision: EnrollmentDecision, catalog: Catalog, now: datetime
) -> dict[str, object]:
    loaded = catalog.latest(decision.sequence_key)
    return {
        "lead_id": lead.id,
        "sequence_key": loaded.spec.key,
        "sequence_version": loaded.version,
        "current_step": loaded.spec.steps[0].id,
        "step_started_at": now,
        "next_run_at": now,
        "status": "active",
        "entered_at": now,
    }


def _insert(session: Session, rows: list[dict[str, object]]) -> dict[int, Enrollment]:
    """Insert in one statement (per-row RETURNING would cost a round trip per row on SQLite)
    and read the rows back: each lead has only this one active enrollment."""
    if not rows:
        return {}
    session.execute(insert(Enrollment), rows)
    query = select(Enrollment).where(
        Enrollment.lead_id.in_([row["lead_id"] for row in rows]), Enrollment.status == "active"
    )
    return {enrollment.lead_id: enrollment for enrollment in session.scalars(query)}


def _lock_leads(session: Session, ids: Sequence[int]) -> None:
    # Two importers enrolling the same lead at once: the second waits, then sees the first's
    # enrollment in the history below. (FOR UPDATE is left out on SQLite.)
    session.execute(select(Lead.id).where(Lead.id.in_(ids)).order_by(Lead.id).with_for_update())


def _histories(session: Session, ids: Sequence[int]) -> dict[int, list[PastEnrollment]]:
    query = select(
        Enrollment.lead_id,
        Enrollment.sequence_key,
        Enrollment.status,
        Enrollment.entered_at,
        Enrollment.exited_at,
    ).where(Enrollment.lead_id.in_(ids))
    found: dict[int, list[PastEnrollment]] = {}
    for lead_id, key, status, entered_at, exited_at in session.execute(query):
        found.setdefault(lead_id, []).append(PastEnrollment(key, status, entered_at, exited_at))
    return found


def _suppressed(session: Session, emails: Sequence[str]) -> set[str]:
    # An erased address is suppressed by its hash only (see services/erasure.py).
    keys = suppression_keys(emails)
    query = select(Suppression.email).where(Suppression.email.in_(sorted(keys)))
    return {keys[key] for key in session.scalars(query)}
