"""Branch conditions, evaluated as data against what the lead is and did (no Python eval)."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from nurture.authoring.templates import ConditionError, compile_condition
from nurture.core.durations import Duration
from nurture.sequences.spec import Condition


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


@lru_cache(maxsize=256)
def _expression(source: str) -> Callable[[Mapping[str, Any]], bool]:
    # The same sandbox the validator checks expressions with; compiled once per source.
    return compile_condition(source)


def _expression_holds(source: str, lead: Mapping[str, Any]) -> bool:
    try:
        return _expression(source)(lead)
    except ConditionError:  # e.g. a missing attribute compared to a number: not a match
        return False


def holds(cond: Condition, lead: Mapping[str, Any], activity: Activity, now: datetime) -> bool:
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
        return all(holds(c, lead, activity, now) for c in cond.all)
    if cond.any is not None:
        return any(holds(c, lead, activity, now) for c in cond.any)
    if cond.not_ is not None:
        return not holds(cond.not_, lead, activity, now)
    return _expression_holds(cond.expr or "false", lead)
