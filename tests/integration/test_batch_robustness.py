"""One bad enrollment or message never costs the rest of its batch, a run that lost its
claim never overwrites the run that holds it, and a retry is never left waiting for an
enrollment that is gone. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import warnings
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.exc import SADeprecationWarning
from support.engine import MONDAY, add_lead, enrollment, events, make_runtime, messages, tick_at

from nurture.db.models import Enrollment, Suppression
from nurture.db.session import transaction
from nurture.delivery.transports import MemoryTransport, TransportError
from nurture.jobs.advance import process_claims
from nurture.runtime import Runtime
from nurture.sequences import advance, outcomes
from nurture.sequences.advance import PARK_DELAY
from nurture.sequences.claims import claim_due

LEASE = timedelta(seconds=600)  # Settings.claim_lease_seconds
TEMPORARY = TransportError("SMTP: RCPT TO refused: 451 4.3.0 try later", code=451)


def set_enrollment(rt: Runtime, lead_id: int, **values: Any) -> None:
    with transaction(rt.sessions) as session:
        session.execute(update(Enrollment).where(Enrollment.lead_id == lead_id).values(**values))


def sent_to(memory: MemoryTransport) -> list[str]:
    return [s.to for s in memory.sent]


# ------------------------------------------------------------ a broken enrollment (2a)


def test_an_enrollment_that_cannot_be_advanced_is_parked_and_the_batch_goes_on(
    rt: Runtime, memory: MemoryTransport
) -> None:
    good = add_lead(rt, "good@acme.example")
    broken = add_lead(rt, "broken@acme.example")
    set_enrollment(rt, broken, sequence_version="never-stored")

    with warnings.catch_warnings():
        warnings.simplefilter("error", SADeprecationWarning)  # e.g. Result.tuples()
        report = tick_at(rt, MONDAY)

    assert (report.total_sent, report.problems["error"]) == (1, 1)
    assert sent_to(memory) == ["good@acme.example"]
    assert enrollment(rt, good).current_step == "followup"
    parked = enrollment(rt, broken)
    assert (parked.status, parked.current_step) == ("active", "welcome")
    assert parked.next_run_at == MONDAY + PARK_DELAY
    assert parked.last_deferral.startswith("error: UnknownSequenceVersion: ")
    assert (parked.claim_token, parked.claimed_until) == (None, None)
    assert [m.to_email for m in messages(rt)] == ["good@acme.example"]
    # Due again an hour later, and parked again while the version is still missing.
    assert tick_at(rt, MONDAY + PARK_DELAY).problems["error"] == 1
    assert enrollment(rt, broken).next_run_at == MONDAY + 2 * PARK_DELAY


def test_a_failure_after_the_send_still_records_it_and_parks_past_the_step(
    rt: Runtime, memory: MemoryTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = add_lead(rt, "good@acme.example")
    unlucky = add_lead(rt, "unlucky@acme.example")
    unlucky_enrollment = enrollment(rt, unlucky).id
    real_advance = advance.advance

    def failing_after_send(*args: Any, **kwargs: Any) -> Any:
        if not kwargs["may_send"] and args[2].id == unlucky_enrollment:
            raise RuntimeError("boom while scheduling the next step")
        return real_advance(*args, **kwargs)

    monkeypatch.setattr(outcomes, "advance", failing_after_send)
    report = tick_at(rt, MONDAY)

    assert (report.total_sent, report.problems["error"]) == (2, 1)
    assert sorted(m.status for m in messages(rt)) == ["sent", "sent"]
    assert len(events(rt, "sent")) == 2
    assert enrollment(rt, good).next_run_at == MONDAY + timedelta(days=3)
    parked = enrollment(rt, unlucky)
    assert (parked.current_step, parked.step_started_at) == ("pause", MONDAY)
    assert parked.next_run_at == MONDAY + PARK_DELAY
    assert parked.last_deferral == "error: RuntimeError: boom while scheduling the next step"

    monkeypatch.setattr(outcomes, "advance", real_advance)
    assert tick_at(rt, MONDAY + PARK_DELAY).total_sent == 0  # the welcome is never resent
    # The wait starts when the parked enrollment reaches it, an hour late.
    followup_at = MONDAY + PARK_DELAY + timedelta(days=3)
    assert enrollment(rt, unlucky).next_run_at == followup_at
    assert tick_at(rt, MONDAY + timedelta(days=3)).total_sent == 1
    assert tick_at(rt, followup_at).total_sent == 1
    assert sorted(sent_to(memory)) == sorted(["good@acme.example", "unlucky@acme.example"] * 2)


# ------------------------------------------------- an unexpected transport error (2b)


def test_an_unexpected_send_error_is_unknown_for_that_message_only(
    rt: Runtime, memory: MemoryTransport
) -> None:
    odd = {name: add_lead(rt, f"{name}@acme.example") for name in ("first", "odd", "last")}["odd"]
    memory.fail_recipient("odd@acme.example", RuntimeError("driver bug"))

    report = tick_at(rt, MONDAY)

    assert (report.total_sent, report.problems["unknown"]) == (2, 1)
    assert sent_to(memory) == ["first@acme.example", "last@acme.example"]
    by_email = {m.to_email: m for m in messages(rt)}
    unknown = by_email["odd@acme.example"]
    assert unknown.status == "unknown"
    assert unknown.error == "outcome unknown: RuntimeError: driver bug"
    assert [e.message_id for e in events(rt, "unknown")] == [unknown.id]
    # Past the step, as if it had been sent: the welcome is never sent again.
    moved_on = enrollment(rt, odd)
    assert (moved_on.current_step, moved_on.next_run_at) == (
        "followup",
        MONDAY + timedelta(days=3),
    )
    assert memory.attempts == 3
    for later in (LEASE, LEASE + PARK_DELAY):  # whatever comes due later, it is not resent
        assert tick_at(rt, MONDAY + later).total_sent == 0
    assert memory.attempts == 3


# -------------------------------------------------------------- a lost claim (2c)


class TakenOverMidSend(MemoryTransport):
    """While the first message is being sent, another run takes its enrollment over (as
    after a lease that ran out): the claim token changes under the sending run."""

    def __init__(self, rt: Runtime | None = None, error: Exception | None = None) -> None:
        super().__init__()
        self.rt = rt
        self.error = error

    def send(self, msg: EmailMessage, *, envelope_from: str, to: str) -> None:
        if self.rt is not None:
            rt, self.rt = self.rt, None
            with transaction(rt.sessions) as session:
                session.execute(
                    update(Enrollment).values(
                        claim_token="another-run", next_run_at=MONDAY + 2 * LEASE
                    )
                )
        if self.error is not None:
            raise self.error
        super().send(msg, envelope_from=envelope_from, to=to)


@pytest.mark.parametrize(
    ("error", "status"), [(None, "sent"), (TEMPORARY, "failed")], ids=["sent", "retry"]
)
def test_outcomes_never_touch_an_enrollment_another_run_took_over(
    db_url: str, error: Exception | None, status: str
) -> None:
    transport = TakenOverMidSend(error=error)
    rt = make_runtime(db_url, transport)
    try:
        lead = add_lead(rt, "alex@acme.example")
        transport.rt = rt
        claims = claim_due(rt.sessions, MONDAY, 10, LEASE)

        report = process_claims(rt, claims, MONDAY)

        assert report.problems["claim lost"] == 1
        assert report.total_sent == (1 if status == "sent" else 0)
        [message] = messages(rt)
        assert message.status == status  # the message's outcome is still recorded
        if status == "failed":
            assert "not retried: this run no longer holds the enrollment" in message.error
        held = enrollment(rt, lead)  # exactly as the other run left it
        assert (held.claim_token, held.current_step) == ("another-run", "welcome")
        assert held.next_run_at == MONDAY + 2 * LEASE
        assert held.last_deferral == ""
    finally:
        rt.close()


# ---------------------------------------------- retries of exited enrollments (2e)


def test_a_retry_is_failed_when_the_enrollment_exits_at_its_next_run(
    rt: Runtime, memory: MemoryTransport
) -> None:
    lead = add_lead(rt, "alex@acme.example")
    memory.fail_next(TEMPORARY)
    assert tick_at(rt, MONDAY).deferred
    [waiting] = messages(rt)
    assert waiting.status == "retry"
    with transaction(rt.sessions) as session:
        session.add(
            Suppression(email="alex@acme.example", reason="unsubscribed", created_at=MONDAY)
        )

    tick_at(rt, enrollment(rt, lead).next_run_at or MONDAY)

    [failed] = messages(rt)
    assert failed.status == "failed"
    assert failed.error.startswith("not retried: the enrollment exited (suppressed: unsubscribed)")
    assert TEMPORARY.message in failed.error
    assert enrollment(rt, lead).status == "exited"
    assert memory.sent == []


def test_a_retry_is_failed_when_the_enrollment_exited_elsewhere(
    rt: Runtime, memory: MemoryTransport
) -> None:
    lead = add_lead(rt, "alex@acme.example")
    memory.fail_next(TEMPORARY)
    tick_at(rt, MONDAY)
    # As the lifecycle or an erasure does it: straight to the row, outside the engine.
    set_enrollment(rt, lead, status="exited", exit_reason="erased", next_run_at=None)

    tick_at(rt, MONDAY + timedelta(minutes=1))  # any scheduler pass settles it

    [failed] = messages(rt)
    assert failed.status == "failed"
    assert failed.error.startswith("not retried: the enrollment exited (erased); ")
    assert memory.sent == []
