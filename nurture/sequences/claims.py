"""Claiming due enrollments: two ticks or two workers never take the same one.

A claim is a lease: the enrollment's ``next_run_at`` moves to the end of the lease, so if
the worker that took it vanishes, the enrollment simply comes due again.

Each claim also settles the messages left waiting for a retry by enrollments that have
exited since (a lifecycle exit, an erasure): they become ``failed`` and are never retried."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from nurture.db.models import Enrollment, Message
from nurture.db.session import transaction


@dataclass(frozen=True)
class Claim:
    enrollment_id: int
    token: str


def claim_due(
    sessions: sessionmaker[Session], now: datetime, limit: int, lease: timedelta
) -> list[Claim]:
    """Claim up to ``limit`` due active enrollments, oldest first."""
    token = str(uuid.uuid4())
    with transaction(sessions) as session:
        settle_abandoned_retries(session)
        due = (
            select(Enrollment.id)
            .where(Enrollment.status == "active", Enrollment.next_run_at <= now)
            .order_by(Enrollment.next_run_at)
            .limit(limit)
        )
        if session.get_bind().dialect.name == "postgresql":
            # Rows another tick is claiming right now are skipped, not waited for.
            due = due.with_for_update(skip_locked=True)
        ids = list(session.scalars(due))
        if not ids:
            return []
        # The conditional UPDATE is the claim everywhere (healthchecks' pattern): a row
        # another claimer took in between no longer matches the WHERE and is not ours.
        session.execute(
            update(Enrollment)
            .where(
                Enrollment.id.in_(ids),
                Enrollment.status == "active",
                Enrollment.next_run_at <= now,
            )
            .values(claim_token=token, claimed_until=now + lease, next_run_at=now + lease)
        )
        ours = session.scalars(
            select(Enrollment.id).where(Enrollment.id.in_(ids), Enrollment.claim_token == token)
        )
        return [Claim(enrollment_id, token) for enrollment_id in sorted(ours)]


def take_over(
    session: Session, claims: list[Claim], now: datetime, lease: timedelta
) -> tuple[str, list[int]]:
    """Swap the tick's claim tokens for this run's own token. A task delivered twice finds
    the token already swapped and does nothing, so one claim is processed at most once."""
    run_token = str(uuid.uuid4())
    taken: list[int] = []
    for token in sorted({c.token for c in claims}):
        ids = [c.enrollment_id for c in claims if c.token == token]
        session.execute(
            update(Enrollment)
            .where(
                Enrollment.id.in_(ids),
                Enrollment.claim_token == token,
                Enrollment.status == "active",
            )
            .values(claim_token=run_token, claimed_until=now + lease, next_run_at=now + lease)
        )
    taken = list(
        session.scalars(
            select(Enrollment.id).where(
                Enrollment.id.in_([c.enrollment_id for c in claims]),
                Enrollment.claim_token == run_token,
            )
        )
    )
    return run_token, sorted(taken)


def abandoned_retry_error(exit_reason: str, last_error: str) -> str:
    """The error of a message that waited for a retry when its enrollment exited."""
    return f"not retried: the enrollment exited ({exit_reason or 'no reason given'}); {last_error}"


def settle_abandoned_retries(session: Session) -> int:
    """Mark ``failed`` every message waiting for a retry whose enrollment is no longer
    active; return how many. Cheap when there are none (messages are indexed by status)."""
    abandoned = session.execute(
        select(Message.id, Message.error, Enrollment.exit_reason)
        .join(Enrollment, Enrollment.id == Message.enrollment_id)
        .where(Message.status == "retry", Enrollment.status != "active")
    ).all()
    for message_id, error, exit_reason in abandoned:
        session.execute(
            update(Message)
            .where(Message.id == message_id, Message.status == "retry")
            .values(status="failed", error=abandoned_retry_error(exit_reason, error))
        )
    return len(abandoned)
