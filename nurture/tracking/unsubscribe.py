"""Unsubscribing: the address is suppressed for every sequence and the lead's active
enrollments end, before the page answers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    Connection,
    update,
)

from nurture.db.models import Enrollment

# The engine's own reason for leaving on a suppression ("suppressed: <reason>").
UNSUBSCRIBED_EXIT = "suppressed: unsubscribed"


@dataclass(frozen=True)
class UnsubscribeResult:
    """The address that was suppressed and the event recorded (None if already done)."""

    email: str
    event_id: int | None


def exit_unsubscribed(conn: Connection, lead_id: int, at: datetime) -> int:
    """End the lead's active enrollments now, so no screen shows it still nurtured; returns
    how many. One claimed by a sending worker (mid-send) is left to the engine, which exits
    it on its next decision: a conditional update never overwrites the worker's outcome."""
    result = conn.execute(
        update(Enrollment)
        .where(
            Enrollment.lead_id == lead_id,
            Enrollment.status == "active",
            Enrollment.claim_token.is_(None),
        )
        .values(
            status="exited",
            exit_reason=UNSUBSCRIBED_EXIT,
            exited_at=at,
            next_run_at=None,
            claimed_until=None,
        )
    )
    return int(result.rowcount or 0)
