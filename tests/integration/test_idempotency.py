"""At most one message per (enrollment, step), and nothing due is lost: the same tick twice,
the same task delivered twice (in turn and at once), workers killed mid-way, concurrent ticks.
Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import TypeVar

import pytest
from sqlalchemy import select
from support.engine import (
    MONDAY,
    add_lead,
    enrollment,
    make_runtime,
    messages,
    tick_at,
)
from typer.testing import CliRunner

from nurture.cli import app
from nurture.db.models import Enrollment
from nurture.delivery.transports import MemoryTransport
from nurture.jobs.advance import process_claims
from nurture.jobs.tick import tick
from nurture.runtime import Runtime
from nurture.sequences import advance
from nurture.sequences.batch import BatchReport
from nurture.sequences.claims import Claim, claim_due

LEASE = timedelta(seconds=600)  # Settings.claim_lease_seconds
T = TypeVar("T")


class Killed(BaseException):
    """The process dies here: like SIGKILL, no ``except Exception`` handler sees it."""


class DyingTransport(MemoryTransport):
    """Dies on the first ``deaths`` sends, before anything reaches the server."""

    def __init__(self, deaths: int = 1) -> None:
        super().__init__()
        self.deaths = deaths

    def send(self, msg: EmailMessage, *, envelope_from: str, to: str) -> None:
        if self.deaths:
            self.deaths -= 1
            raise Killed(f"killed while sending to {to}")
        super().send(msg, envelope_from=envelope_from, to=to)


def claim(rt: Runtime, now: datetime = MONDAY, limit: int = 200) -> list[Claim]:
    return claim_due(rt.sessions, now, limit, LEASE)


def in_two_threads(work: Callable[[], T]) -> list[T]:
    """Run ``work`` twice at the same moment; re-raise what a thread raised."""
    start = threading.Barrier(2)
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        start.wait(timeout=10)
        try:
            results.append(work())
        except BaseException as exc:  # handed back to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread is stuck"
    if errors:
        raise errors[0]
    return results


def one_message_per_step(rt: Runtime) -> None:
    keys = [(m.enrollment_id, m.step_id) for m in messages(rt)]
    assert len(keys) == len(set(keys))


def test_the_same_tick_twice_sends_once(rt: Runtime, memory: MemoryTransport) -> None:
    add_lead(rt, "alex@acme.example")

    first, second = tick_at(rt, MONDAY), tick_at(rt, MONDAY)

    assert (first.total_sent, second.total_sent) == (1, 0)
    assert len(memory.sent) == 1
    assert [(m.step_id, m.status) for m in messages(rt)] == [("welcome", "sent")]


def test_the_same_task_delivered_twice_sends_once(rt: Runtime, memory: MemoryTransport) -> None:
    add_lead(rt, "alex@acme.example")
    add_lead(rt, "sam@acme.example")
    claims = claim(rt)
    assert len(claims) == 2

    first = process_claims(rt, claims, MONDAY)
    again = process_claims(rt, claims, MONDAY + timedelta(seconds=5))

    assert (first.total_sent, again.total_sent) == (2, 0)
    assert sorted(s.to for s in memory.sent) == ["alex@acme.example", "sam@acme.example"]
    one_message_per_step(rt)


def test_the_same_task_delivered_twice_at_once_sends_once(
    rt: Runtime, memory: MemoryTransport
) -> None:
    for n in range(5):
        add_lead(rt, f"lead{n}@acme.example")
    claims = claim(rt)

    reports = in_two_threads(lambda: process_claims(rt, claims, MONDAY))

    assert sorted(r.total_sent for r in reports) == [0, 5]
    assert len(memory.sent) == 5
    assert len(messages(rt)) == 5
    one_message_per_step(rt)


def test_killed_between_message_claim_and_send_is_unknown_never_resent(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dying = DyingTransport()
    rt = make_runtime(db_url, dying)
    try:
        lead = add_lead(rt, "alex@acme.example")
        claims = claim(rt)
        with pytest.raises(Killed):
            process_claims(rt, claims, MONDAY)
        [claimed] = messages(rt)
        assert (claimed.step_id, claimed.status) == ("welcome", "sending")
        # Celery redelivers the task of the dead worker (acks_late): it must not send.
        assert process_claims(rt, claims, MONDAY + timedelta(seconds=30)).total_sent == 0
        assert messages(rt)[0].status == "sending"

        # Within the lease the enrollment is still the dead worker's.
        assert tick_at(rt, MONDAY + LEASE - timedelta(seconds=1)).total_sent == 0
        after_lease = MONDAY + LEASE
        report = tick_at(rt, after_lease)

        assert report.total_sent == 0 and report.problems["unknown"] == 1
        [unknown] = messages(rt)
        assert (unknown.status, unknown.attempts) == ("unknown", 1)
        assert "not resent" in unknown.error
        assert dying.sent == []  # the welcome is never blindly sent again
        moved_on = enrollment(rt, lead)
        assert (moved_on.status, moved_on.current_step) == ("active", "followup")
        assert moved_on.next_run_at == after_lease + timedelta(days=3)
        assert tick_at(rt, after_lease + timedelta(days=3)).total_sent == 1
        assert [(s.to, str(s.message["Subject"])) for s in dying.sent] == [
            ("alex@acme.example", "A follow-up for Acme")
        ]
        _assert_outbox_lists_unknown(db_url, monkeypatch, unknown.id)
    finally:
        rt.close()


def _assert_outbox_lists_unknown(
    db_url: str, monkeypatch: pytest.MonkeyPatch, message_id: int
) -> None:
    monkeypatch.setenv("NURTURE_DATABASE_URL", db_url)
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["outbox", "--status", "unknown"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "alex@acme.example" in line)
    assert "unknown" in row and "welcome" in row and str(message_id) in row
    assert "followup" not in result.output  # the sent follow-up is not unknown


def test_killed_after_the_enrollment_claim_sends_once_after_the_lease(
    rt: Runtime, memory: MemoryTransport
) -> None:
    lead = add_lead(rt, "alex@acme.example")
    stale = claim(rt)  # the tick dispatched these; the worker died before touching them
    assert [c.enrollment_id for c in stale] == [enrollment(rt, lead).id]

    assert tick_at(rt, MONDAY + timedelta(minutes=1)).total_sent == 0  # leased, not due
    assert tick_at(rt, MONDAY + LEASE).total_sent == 1
    # The dead worker's task redelivered late finds its claim gone.
    assert process_claims(rt, stale, MONDAY + LEASE + timedelta(minutes=1)).total_sent == 0
    assert tick_at(rt, MONDAY + LEASE + timedelta(minutes=2)).total_sent == 0
    assert len(memory.sent) == 1
    assert [(m.step_id, m.status) for m in messages(rt)] == [("welcome", "sent")]


def test_killed_while_advancing_is_redone_by_the_redelivered_task(
    rt: Runtime, memory: MemoryTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_lead(rt, "alex@acme.example")
    claims = claim(rt)
    real_claim_message = advance._claim_message

    def die(*args: object, **kwargs: object) -> None:
        raise Killed("killed before the message claim")

    monkeypatch.setattr(advance, "_claim_message", die)
    with pytest.raises(Killed):
        process_claims(rt, claims, MONDAY)
    assert messages(rt) == []

    monkeypatch.setattr(advance, "_claim_message", real_claim_message)
    report = process_claims(rt, claims, MONDAY + timedelta(seconds=30))  # acks_late redelivery

    assert report.total_sent == 1
    assert process_claims(rt, claims, MONDAY + timedelta(seconds=40)).total_sent == 0
    assert tick_at(rt, MONDAY + LEASE).total_sent == 0
    assert len(memory.sent) == 1


def test_two_ticks_at_once_claim_disjoint_sets(rt: Runtime) -> None:
    for n in range(30):
        add_lead(rt, f"lead{n}@acme.example", enrolled=True)

    batches = in_two_threads(lambda: claim(rt, limit=20))

    ids = [[c.enrollment_id for c in batch] for batch in batches]
    assert not set(ids[0]) & set(ids[1])
    assert sorted(ids[0] + ids[1]) == list(range(1, 31))
    assert claim(rt) == []  # everything is leased


def test_two_full_ticks_at_once_send_each_step_once(rt: Runtime, memory: MemoryTransport) -> None:
    for n in range(30):
        add_lead(rt, f"lead{n}@acme.example")
    rt.settings.batch_size = 4  # small batches, so the two passes interleave

    reports: list[BatchReport] = in_two_threads(lambda: tick(rt, MONDAY))

    assert sum(r.total_sent for r in reports) == 30
    assert sorted(s.to for s in memory.sent) == sorted(f"lead{n}@acme.example" for n in range(30))
    assert len(messages(rt)) == 30
    one_message_per_step(rt)


# SKIP LOCKED is PostgreSQL's; on SQLite a claim holds the write lock, so claims take turns.
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_postgres_claim_skips_rows_another_claimer_holds(rt: Runtime) -> None:
    for n in range(6):
        add_lead(rt, f"lead{n}@acme.example")
    claimed: list[Claim] = []
    with rt.sessions() as holder, holder.begin():
        # Another transaction holds two due rows: a claim must take the others, not wait.
        holder.execute(
            select(Enrollment.id).where(Enrollment.id.in_([1, 2])).with_for_update()
        ).all()
        claimer = threading.Thread(target=lambda: claimed.extend(claim(rt)))
        claimer.start()
        claimer.join(timeout=5)
        blocked = claimer.is_alive()
    claimer.join(timeout=10)
    assert not blocked, "claim_due waited for rows another transaction holds"
    assert sorted(c.enrollment_id for c in claimed) == [3, 4, 5, 6]
    assert [c.enrollment_id for c in claim(rt)] == [1, 2]
