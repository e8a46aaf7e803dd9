"""The lifecycle state machine: every allowed move between stages, declared in one table.

Pure: ``transition`` returns what would happen (a :class:`Transition`) or why not (a
:class:`Refusal`); it never changes anything, so a refused move leaves the lead as it was.

    subscriber -> lead -> mql -> sal -> sql -> opportunity -> customer
                           ^  \\     \\     \\        \\
                           |   +-----+-----+--------+--> recycled (rejected by sales)
                           +----------------------------- recycled (cool-down over)
    any stage but customer -> disqualified (terminal)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from nurture.core.stages import LifecycleStage

Stage = LifecycleStage


class ReasonKind(StrEnum):
    """Why a stage changed: a scoring rule, a fast-track trigger, a sales decision, a CSV
    import, the API's lead upsert, or the engine itself (a cool-down that ended)."""

    rule = "rule"
    trigger = "trigger"
    sales = "sales"
    import_ = "import"
    api = "api"
    system = "system"


@dataclass(frozen=True)
class Reason:
    """Why a transition happens (``detail`` is shown in the stage history; ``data`` keeps
    the facts: rules that fired, the sales reason code, BANT answers)."""

    kind: ReasonKind
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


# Every allowed move, by the stage it starts from. Customers and disqualified leads are
# done: nothing moves them (a customer's new deal is a CRM matter, not nurturing's).
ALLOWED: dict[Stage, frozenset[Stage]] = {
    Stage.subscriber: frozenset({Stage.lead, Stage.mql, Stage.sql, Stage.disqualified}),
    Stage.lead: frozenset({Stage.mql, Stage.sql, Stage.disqualified}),
    Stage.mql: frozenset({Stage.sal, Stage.sql, Stage.recycled, Stage.disqualified}),
    Stage.sal: frozenset({Stage.sql, Stage.recycled, Stage.disqualified}),
    Stage.sql: frozenset({Stage.opportunity, Stage.recycled, Stage.disqualified}),
    Stage.opportunity: frozenset({Stage.customer, Stage.recycled, Stage.disqualified}),
    Stage.recycled: frozenset({Stage.lead, Stage.mql, Stage.sql, Stage.disqualified}),
    Stage.customer: frozenset(),
    Stage.disqualified: frozenset(),
}
TERMINAL = frozenset(stage for stage, targets in ALLOWED.items() if not targets)
# Stages where marketing nurtures; from MQL on, the lead belongs to sales.
MARKETING_STAGES = frozenset({Stage.subscriber, Stage.lead, Stage.recycled})
# The order of the funnel, for reports.
FUNNEL_ORDER = (
    Stage.subscriber,
    Stage.lead,
    Stage.mql,
    Stage.sal,
    Stage.sql,
    Stage.opportunity,
    Stage.customer,
    Stage.recycled,
    Stage.disqualified,
)


@dataclass(frozen=True)
class Transition:
    """An allowed move, ready to be stored."""

    from_stage: Stage
    to_stage: Stage
    reason: Reason
    at: datetime

    @property
    def starts_new_cycle(self) -> bool:
        """Leaving ``recycled`` starts the lead's next pass through the funnel."""
        return self.from_stage is Stage.recycled and self.to_stage is not Stage.disqualified


@dataclass(frozen=True)
class Refusal:
    """A move the machine does not allow, and why (a sentence a salesperson can act on)."""

    from_stage: str
    to_stage: str
    message: str

    def __str__(self) -> str:
        return self.message


class TransitionRefused(Exception):
    """Raised by services when a refused move was asked for; carries the refusal."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


def parse_stage(value: str) -> Stage | None:
    """The stage named ``value`` (any case), or None if there is no such stage."""
    try:
        return Stage(value.strip().lower())
    except ValueError:
        return None


def allowed_targets(current: str) -> list[Stage]:
    """The stages a lead at ``current`` may move to, in funnel order."""
    stage = parse_stage(current)
    targets = ALLOWED.get(stage, frozenset()) if stage else frozenset()
    return [s for s in FUNNEL_ORDER if s in targets]


def transition(current: str, target: str, reason: Reason, now: datetime) -> Transition | Refusal:
    """The move from ``current`` to ``target`` at ``now``, or a refusal saying why not."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    source, goal = parse_stage(current), parse_stage(target)
    if source is None:
        return Refusal(current, target, f"unknown current stage {current!r}")
    if goal is None:
        names = ", ".join(s.value for s in FUNNEL_ORDER)
        return Refusal(current, target, f"unknown stage {target!r} (stages: {names})")
    if source is goal:
        return Refusal(current, target, f"the lead is already {goal.value}")
    if goal not in ALLOWED[source]:
        return Refusal(current, target, _refusal_message(source, goal))
    return Transition(source, goal, reason, now)


def _refusal_message(source: Stage, goal: Stage) -> str:
    if source in TERMINAL:
        return f"cannot move a {source.value} lead to {goal.value}: {source.value} is final"
    allowed = ", ".join(s.value for s in allowed_targets(source))
    return f"cannot move from {source.value} to {goal.value} (from {source.value}: {allowed})"
