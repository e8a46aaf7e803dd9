"""Why an enrollment's next step waits, in words a marketer reads on ``nurture lead show``
and the lead page: a wait step, the send window, the frequency cap, a retry, a pause.
Pure: a function of the enrollment as stored, its sequence and ``now``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from nurture.sequences.spec import SequenceSpec, Step

# What the engine writes in last_deferral before " until <time>" (sequences.advance.defer).
_DEFERRALS = {
    "window": "outside the send window",
    "cap": "the frequency cap",
    "smtp temporary failure": "retrying a temporary SMTP failure",
}


@dataclass(frozen=True)
class EnrollmentState:
    """An enrollment as stored: what decides why it waits."""

    status: str
    step: str
    next_run_at: datetime | None
    last_deferral: str = ""
    claimed_until: datetime | None = None
    paused: bool = False


def why_waiting(state: EnrollmentState, spec: SequenceSpec | None, now: datetime) -> str:
    """Why the next step has not run yet ("" when nothing holds it: due, or ended)."""
    if state.status != "active":
        return ""
    if state.paused:
        return "the sequence is paused: its due steps wait until it is resumed"
    if state.claimed_until is not None and _utc(state.claimed_until) > now:
        return f"being sent now (claimed until {_at(state.claimed_until)})"
    if state.next_run_at is None or _utc(state.next_run_at) <= now:
        return ""
    deferred = _deferral(state)
    if deferred:
        return f"{deferred} until {_at(state.next_run_at)}"
    step = spec.step(state.step) if spec is not None else None
    previous = _previous(spec, state.step) if spec is not None else None
    if previous is not None and previous.wait is not None:
        return f"a wait of {previous.wait} until {_at(state.next_run_at)}"
    if step is not None and step.wait is not None:
        return f"a wait of {step.wait} until {_at(state.next_run_at)}"
    return f"scheduled for {_at(state.next_run_at)}"


def _deferral(state: EnrollmentState) -> str:
    """The deferral the enrollment's next run is for ("" if it is for something else)."""
    reason, _, until = state.last_deferral.partition(" until ")
    if reason.startswith("error: "):
        return f"set aside after an error ({reason.removeprefix('error: ')})"
    label = _DEFERRALS.get(reason)
    if label is None or state.next_run_at is None:
        return ""
    try:
        stamp = datetime.fromisoformat(until)
    except ValueError:
        return ""
    return label if _utc(stamp) == _utc(state.next_run_at) else ""


def _previous(spec: SequenceSpec, step_id: str) -> Step | None:
    steps = spec.steps
    index = next((i for i, s in enumerate(steps) if s.id == step_id), None)
    return steps[index - 1] if index else None


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _at(value: datetime) -> str:
    return f"{_utc(value):%Y-%m-%d %H:%M} UTC"
