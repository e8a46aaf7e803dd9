"""Which sequence a lead enters, if any (pure: no database, ``now`` passed in).

The rules, in the order they are checked:

1. One nurture track at a time: a lead active in ANY sequence enters no other one; it is
   re-considered when that enrollment ends (completed or exited).
2. Disqualified leads are never nurtured, whatever a sequence's audience says; a lead
   sales recycled is silent until its cool-down ends (``recycle_until``).
3. A sequence matches when the lead's persona and journey stage are in its audience, and
   its lifecycle stage is among the audience's lifecycle stages (by default subscriber,
   lead and recycled).
4. The entry policy of the matching sequence: ``once`` admits a lead that never entered
   it; ``again`` admits it once the cool-down, counted from its last exit, is over. A lead
   coming back from recycling (``returning``) is admitted by an ``again`` sequence at once:
   the cool-down sales gave it replaces the sequence's own (it never overrides ``once``).

When several sequences match, they are tried in order of key (so the same lead and YAML
always give the same answer) and the first that admits the lead wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from nurture.core.stages import LifecycleStage
from nurture.sequences.spec import SequenceSpec
from nurture.sequences.timing import add_wait


@dataclass(frozen=True)
class PastEnrollment:
    """What the audience rules need to know about one of the lead's enrollments."""

    sequence_key: str
    status: str
    entered_at: datetime
    exited_at: datetime | None


class Outcome(StrEnum):
    enroll = "enroll"
    already_active = "already_active"
    disqualified = "disqualified"
    no_sequence = "no_sequence"
    lifecycle_excluded = "lifecycle_excluded"
    entered_once = "entered_once"
    cooling_down = "cooling_down"
    # Decided by the enrollment service, which knows the suppression list.
    suppressed = "suppressed"


@dataclass(frozen=True)
class EnrollmentDecision:
    """Enroll into ``spec``, or why not. ``sequence_key`` names the sequence concerned
    (the one entered, the one the lead is active in, or the one that refused it)."""

    outcome: Outcome
    detail: str
    spec: SequenceSpec | None = None
    sequence_key: str = ""
    until: datetime | None = None

    @property
    def enroll(self) -> bool:
        return self.outcome is Outcome.enroll


def choose_sequence(
    specs: Sequence[SequenceSpec],
    persona: str,
    journey_stage: str,
    lifecycle_stage: str,
    history: Sequence[PastEnrollment],
    now: datetime,
    recycle_until: datetime | None = None,
    *,
    returning: bool = False,
) -> EnrollmentDecision:
    """The sequence this lead should enter now, or the reason it enters none."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    active = next((h for h in history if h.status == "active"), None)
    if active is not None:
        return EnrollmentDecision(
            Outcome.already_active,
            f"already active in {active.sequence_key} (one sequence at a time)",
            sequence_key=active.sequence_key,
        )
    if lifecycle_stage == LifecycleStage.disqualified:
        return EnrollmentDecision(Outcome.disqualified, "disqualified leads are never nurtured")
    if recycle_until is not None and now < recycle_until:
        # Sales asked for silence: nothing, not even a re-nurture track, before it ends.
        return EnrollmentDecision(
            Outcome.cooling_down,
            f"recycled by sales: silent until {recycle_until.isoformat()}",
            until=recycle_until,
        )
    matching = [
        s for s in sorted(specs, key=lambda s: s.key) if _matches(s, persona, journey_stage)
    ]
    if not matching:
        who = f"persona {persona!r}" if persona else "a lead without a persona"
        return EnrollmentDecision(
            Outcome.no_sequence, f"no sequence for {who} at stage {journey_stage!r}"
        )
    admitted = [s for s in matching if lifecycle_stage in s.audience.lifecycle_stages]
    if not admitted:
        keys = ", ".join(s.key for s in matching)
        return EnrollmentDecision(
            Outcome.lifecycle_excluded,
            f"lifecycle stage {lifecycle_stage!r} is not in the audience of {keys}",
            sequence_key=matching[0].key,
        )
    return _first_open(admitted, history, now, returning)


def _matches(spec: SequenceSpec, persona: str, journey_stage: str) -> bool:
    return persona in spec.audience.personas and journey_stage in spec.audience.journey_stages


def _first_open(
    specs: Sequence[SequenceSpec],
    history: Sequence[PastEnrollment],
    now: datetime,
    returning: bool = False,
) -> EnrollmentDecision:
    refusals = []
    for spec in specs:
        past = [h for h in history if h.sequence_key == spec.key]
        refusal = entry_refusal(spec, past, now, returning=returning)
        if refusal is None:
            return EnrollmentDecision(
                Outcome.enroll, f"enters {spec.key}", spec=spec, sequence_key=spec.key
            )
        refusals.append(refusal)
    return refusals[0]


def entry_refusal(
    spec: SequenceSpec, past: Sequence[PastEnrollment], now: datetime, *, returning: bool = False
) -> EnrollmentDecision | None:
    """Why the entry policy keeps the lead out of ``spec`` (None: it may enter).
    ``returning``: the lead comes back from recycling, so no cool-down of ``spec`` applies."""
    if not past:
        return None
    if spec.entry.policy == "once":
        first = min(h.entered_at for h in past)
        return EnrollmentDecision(
            Outcome.entered_once,
            f"entered {spec.key} on {first:%Y-%m-%d} already (entry policy: once)",
            sequence_key=spec.key,
        )
    last_exit = max(h.exited_at or h.entered_at for h in past)
    if spec.entry.cooldown is None or returning:
        return None
    until = add_wait(last_exit, spec.entry.cooldown, ZoneInfo("UTC"))
    if now >= until:
        return None
    return EnrollmentDecision(
        Outcome.cooling_down,
        f"in cool-down for {spec.key} until {until.astimezone(UTC):%Y-%m-%d %H:%M} UTC "
        f"({spec.entry.cooldown} after its last exit)",
        sequence_key=spec.key,
        until=until,
    )
