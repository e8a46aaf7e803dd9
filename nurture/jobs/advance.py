"""Advancing a batch of claimed enrollments, the at-most-once path: claim (take the claims
over, and claim each message due), commit, send, record."""

from __future__ import annotations

from datetime import datetime

from nurture.db.session import transaction
from nurture.delivery.sending import deliver
from nurture.runtime import Runtime
from nurture.sequences.advance import advance_claimed
from nurture.sequences.batch import BatchReport
from nurture.sequences.claims import Claim, take_over
from nurture.sequences.outcomes import record_outcomes


def process_claims(rt: Runtime, claims: list[Claim], now: datetime) -> BatchReport:
    """Advance the claimed enrollments as far as they go at ``now``, sending what is due."""
    report = BatchReport()
    drip = rt.drip()
    with transaction(rt.sessions) as session:
        run_token, ids = take_over(session, claims, now, drip.lease)
        if not ids:
            return report
        pending = advance_claimed(session, drip, ids, now, report)
    # The claims above are committed: only now is the transport called.
    outcomes = deliver(rt.sender(), pending, now)
    with transaction(rt.sessions) as session:
        record_outcomes(session, drip, outcomes, run_token, now, report)
    return report
