"""Branch conditions, evaluated as data against what the lead is and did (no Python eval)."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic import Field, model_validator

from nurture.core.durations import Duration
from nurture.core.schema import DurationText, Strict


class Condition(Strict):
    """A branch condition, as data. Exactly one kind per condition."""

    opened: str | None = None
    clicked: str | None = None
    event: str | None = None
    within: DurationText | None = None
    attribute: str | None = None
    eq: Any = None
    ne: Any = None
    in_: list[Any] | None = Field(default=None, alias="in")
    not_in: list[Any] | None = None
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None
    exists: bool | None = None
    contains: str | None = None
    all: list[Condition] | None = None
    any: list[Condition] | None = None
    not_: Condition | None = Field(default=None, alias="not")
    expr: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Condition:
        kinds = [
            k
            for k in ("opened", "clicked", "event", "attribute", "all", "any", "not_", "expr")
            if getattr(self, k) is not None
        ]
        if len(kinds) != 1:
            raise ValueError(
                "a condition needs exactly one of opened, clicked, event, attribute, all, any, "
                f"not, expr; got {', '.join(k.rstrip('_') for k in kinds) or 'none'}"
            )
        return self

    @property
    def comparisons(self) -> dict[str, Any]:
        """The attribute operators that were set (``in`` and ``not_in`` included)."""
        ops = ("eq", "ne", "in_", "not_in", "gt", "gte", "lt", "lte", "exists", "contains")
        return {op.rstrip("_"): getattr(self, op) for op in ops if op in self.model_fields_set}


@dataclass(frozen=True)
class Activity:
    """What the lead did, as the engine sees it when a step comes due.

    A click counts as an open too: image blocking hides many opens, never clicks."""

    opened_steps: frozenset[str] = frozenset()
    clicked_steps: frozenset[str] = frozenset()
    events: tuple[tuple[str, datetime], ...] = field(default_factory=tuple)

    def opened(self, step_id: str) -> bool:
        return step_id in self.opened_steps or step_id in self.clicked_steps

    def saw_event(self, event_type: str, since: datetime | None) -> bool:
        return any(t == event_type and (since is None or at >= since) for t, at in self.events)


def _contains(value: Any, needle: Any) -> bool:
    return str(needle).lower() in str(value).lower()


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "in": lambda v, opts: v in opts,
    "not_in": lambda v, opts: v not in opts,
    "gt": lambda v, x: v is not None and float(v) > x,
    "gte": lambda v, x: v is not None and float(v) >= x,
    "lt": lambda v, x: v is not None and float(v) < x,
    "lte": lambda v, x: v is not None and float(v) <= x,
    "contains": lambda v, x: v is not None and _contains(v, x),
}


def lead_value(lead: Mapping[str, Any], name: str) -> Any:
    """A lead field, or else one of its free-form attributes (``None`` when absent)."""
    if name in lead and name != "attributes":
        return lead[name]
    attributes = lead.get("attributes") or {}
    return attributes.get(name)


def _attribute_holds(cond: Condition, lead: Mapping[str, Any]) -> bool:
    value = lead_value(lead, cond.attribute or "")
    checks = cond.comparisons
    if not checks:  # a bare attribute means "is set"
        return value not in (None, "")
    for op, expected in checks.items():
        if op == "exists":
            if (value not in (None, "")) != bool(expected):
                return False
            continue
        try:
            if not _COMPARE[op](value, expected):
                return False
        except (TypeError, ValueError):  # "abc" >= 10: a mismatch, not a crash
            return False
    return True


def _as_span(duration: Duration) -> timedelta:
    # "within 5 business days" looks back a calendar week per five business days.
    return (
        duration.span
        if not duration.is_business
        else timedelta(days=duration.business_days * 7 / 5)
    )


class Expressions(Protocol):
    """Evaluates ``expr:`` conditions (``lead.company_size >= 100``). The sandboxed
    compiler lives with the templates (nurture.authoring.templates); it is handed in, so
    this module needs no template engine."""

    def holds(self, source: str, lead: Mapping[str, Any]) -> bool:
        """Whether the expression holds for this lead (False when it cannot be evaluated)."""
        ...


class NoExpressions:
    """For callers that evaluate no ``expr:`` condition: one reaching it is a bug."""

    def holds(self, source: str, lead: Mapping[str, Any]) -> bool:
        raise ValueError(f"expression {source!r} needs the expression compiler; none was given")


NO_EXPRESSIONS = NoExpressions()


def holds(
    cond: Condition,
    lead: Mapping[str, Any],
    activity: Activity,
    now: datetime,
    expressions: Expressions = NO_EXPRESSIONS,
) -> bool:
    """Whether ``cond`` holds for this lead at ``now``."""
    if cond.opened is not None:
        return activity.opened(cond.opened)
    if cond.clicked is not None:
        return cond.clicked in activity.clicked_steps
    if cond.event is not None:
        since = now - _as_span(cond.within) if cond.within else None
        return activity.saw_event(cond.event, since)
    if cond.attribute is not None:
        return _attribute_holds(cond, lead)
    if cond.all is not None:
        return all(holds(c, lead, activity, now, expressions) for c in cond.all)
    if cond.any is not None:
        return any(holds(c, lead, activity, now, expressions) for c in cond.any)
    if cond.not_ is not None:
        return not holds(cond.not_, lead, activity, now, expressions)
    return expressions.holds(cond.expr or "false", lead)
