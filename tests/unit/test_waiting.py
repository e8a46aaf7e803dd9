"""Why the next step waits, as `nurture lead show` and the lead page say it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import yaml

from nurture.sequences.spec import SequenceSpec
from nurture.sequences.waiting import EnrollmentState, why_waiting

NOW = datetime(2026, 3, 2, 18, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=15)
SPEC = SequenceSpec.model_validate(
    yaml.safe_load(
        """
key: drip
name: Drip
audience: {personas: [tester], journey_stages: [awareness]}
steps:
  - {id: welcome, email: {template: drip/welcome, subject: Hi}}
  - {id: pause, wait: 3d}
  - {id: followup, email: {template: drip/followup, subject: Again}}
"""
    )
)


def waiting(**state: object) -> str:
    values: dict[str, object] = {"status": "active", "step": "followup", "next_run_at": LATER}
    return why_waiting(EnrollmentState(**{**values, **state}), SPEC, NOW)  # type: ignore[arg-type]


def test_a_wait_step() -> None:
    assert waiting() == "a wait of 3d until 2026-03-03 09:00 UTC"


def test_the_send_window_and_the_cap() -> None:
    window = f"window until {LATER.isoformat()}"
    assert waiting(last_deferral=window) == "outside the send window until 2026-03-03 09:00 UTC"
    cap = f"cap until {LATER.isoformat()}"
    assert waiting(last_deferral=cap) == "the frequency cap until 2026-03-03 09:00 UTC"
    retry = f"smtp temporary failure until {LATER.isoformat()}"
    assert waiting(last_deferral=retry).startswith("retrying a temporary SMTP failure until")


def test_a_deferral_for_another_run_is_not_the_reason() -> None:
    stale = f"window until {(LATER - timedelta(days=1)).isoformat()}"
    assert waiting(last_deferral=stale) == "a wait of 3d until 2026-03-03 09:00 UTC"


def test_an_error_a_claim_a_pause_and_nothing() -> None:
    assert waiting(last_deferral="error: RuntimeError: boom").startswith(
        "set aside after an error (RuntimeError: boom) until"
    )
    claimed = waiting(claimed_until=NOW + timedelta(minutes=5))
    assert claimed == "being sent now (claimed until 2026-03-02 18:05 UTC)"
    assert waiting(paused=True).startswith("the sequence is paused")
    assert waiting(next_run_at=NOW) == ""  # due: nothing holds it
    assert waiting(status="completed") == ""
    assert waiting(step="welcome", next_run_at=LATER) == "scheduled for 2026-03-03 09:00 UTC"
