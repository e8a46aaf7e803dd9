"""Scoring rules compiled for speed: regexes and globs compiled once, rules indexed by the
event type they count. Built from a :class:`~nurture.scoring.spec.ScoringSpec`."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from nurture.core.conditions import lead_value
from nurture.scoring.spec import (
    Check,
    EventMatch,
    ScoringSpec,
    calendar_span,
    compile_regex,
    glob_regex,
)

FIT, ENGAGEMENT, NEGATIVE = "fit", "engagement", "negative"
CATEGORIES = (FIT, ENGAGEMENT, NEGATIVE)
DEFAULT_HALF_LIFE = timedelta(days=90)
DEFAULT_REPEAT_WINDOW = timedelta(days=30)  # as scoring.spec.DEFAULT_REPEAT_WINDOW
_NUMBER = re.compile(r"^[+-]?\d+(?:\.\d+)?$")

Values = Mapping[str, Any]
Lookup = Callable[[Values, str], Any]
Predicate = Callable[[Values], bool]


@dataclass(frozen=True)
class EventFacts:
    """What scoring needs to know about one event. ``sequence`` and ``step`` come from
    the event's data or else from the message it is about."""

    id: int
    lead_id: int | None
    type: str
    occurred_at: Any  # datetime; Any keeps this module free of clock concerns
    data: Mapping[str, Any]
    is_human: bool = True
    sequence: str = ""
    step: str = ""
    # An open of the same message, or a click of the same link, already counted within the
    # rules' repeat window: its hits are kept with 0 points.
    repeat: bool = False


@dataclass(frozen=True)
class AttributeRule:
    """A rule on who the lead is (fit, or a negative such as a free-mail domain)."""

    name: str
    category: str
    points: float
    test: Predicate
    attributes: tuple[str, ...]  # the attributes the test reads, to explain a hit


@dataclass(frozen=True)
class EventRule:
    """A rule counting events of some types that meet every condition given."""

    name: str
    category: str
    events: frozenset[str]
    points: float
    decays: bool
    conditions: tuple[Predicate, ...] = ()
    cap_count: int | None = None
    cap_span: timedelta | None = None

    def matches(self, event: EventFacts) -> bool:
        if event.type not in self.events:
            return False
        values = _event_values(event)
        return all(condition(values) for condition in self.conditions)

    @property
    def cap_text(self) -> str:
        if self.cap_span is None:
            return ""
        return f"{self.cap_count} per {_span_text(self.cap_span)}"


@dataclass(frozen=True)
class SilenceRule:
    """Points taken away once the lead has shown no engagement for ``span``."""

    name: str
    points: float
    span: timedelta


@dataclass(frozen=True)
class ScoringRules:
    """Every rule of one ``scoring.yaml``, ready to apply. Empty rules score nothing."""

    half_life: timedelta = DEFAULT_HALF_LIFE
    attribute_rules: tuple[AttributeRule, ...] = ()
    event_rules: tuple[EventRule, ...] = ()
    silence_rules: tuple[SilenceRule, ...] = ()
    source: str = ""
    by_event: Mapping[str, tuple[EventRule, ...]] = field(default_factory=dict)
    # False when there was no scoring file: nothing is scored, and nothing taken back.
    loaded: bool = False
    repeat_window: timedelta = DEFAULT_REPEAT_WINDOW

    @classmethod
    def build(
        cls,
        half_life: timedelta,
        attribute_rules: tuple[AttributeRule, ...] = (),
        event_rules: tuple[EventRule, ...] = (),
        silence_rules: tuple[SilenceRule, ...] = (),
        source: str = "",
        repeat_window: timedelta = DEFAULT_REPEAT_WINDOW,
    ) -> ScoringRules:
        """Rules indexed by the event types they count."""
        index: dict[str, list[EventRule]] = {}
        for rule in event_rules:
            for event_type in sorted(rule.events):
                index.setdefault(event_type, []).append(rule)
        by_event = {k: tuple(v) for k, v in index.items()}
        return cls(
            half_life,
            attribute_rules,
            event_rules,
            silence_rules,
            source,
            by_event,
            True,
            repeat_window,
        )

    def for_event(self, event_type: str) -> tuple[EventRule, ...]:
        return self.by_event.get(event_type, ())

    @property
    def names(self) -> frozenset[str]:
        names = [r.name for r in self.attribute_rules] + [r.name for r in self.event_rules]
        return frozenset(names + [r.name for r in self.silence_rules])

    @property
    def capped(self) -> tuple[EventRule, ...]:
        return tuple(r for r in self.event_rules if r.cap_span is not None)

    def category_of(self, rule: str) -> str | None:
        """The section a rule is in (None for a name these rules do not have)."""
        for profile in self.attribute_rules:
            if profile.name == rule:
                return profile.category
        for counted in self.event_rules:
            if counted.name == rule:
                return counted.category
        return NEGATIVE if any(r.name == rule for r in self.silence_rules) else None


def compile_rules(spec: ScoringSpec, source: str = "") -> ScoringRules:
    """Compile a validated spec (regexes and globs once, here)."""
    attribute = [
        AttributeRule(name, FIT, r.points, compile_check(r.if_, lead_value), _attributes(r.if_))
        for name, r in spec.fit.items()
    ]
    events = [
        _event_rule(name, ENGAGEMENT, r, r.points, r.decays, r.cap)
        for name, r in spec.engagement.items()
    ]
    silence = []
    for name, n in spec.negative.items():
        if n.kind == "attribute":
            assert n.if_ is not None
            test = compile_check(n.if_, lead_value)
            attribute.append(AttributeRule(name, NEGATIVE, n.points, test, _attributes(n.if_)))
        elif n.kind == "event":
            events.append(_event_rule(name, NEGATIVE, n, n.points, bool(n.decays), n.cap))
        else:
            assert n.silent_for is not None
            silence.append(SilenceRule(name, n.points, n.silent_for.span))
    half_life = calendar_span(spec.half_life)
    repeat = calendar_span(spec.repeat_window)
    return ScoringRules.build(
        half_life, tuple(attribute), tuple(events), tuple(silence), source, repeat
    )


def _event_rule(
    name: str, category: str, match: EventMatch, points: float, decays: bool, cap: Any
) -> EventRule:
    assert match.event is not None
    return EventRule(
        name=name,
        category=category,
        events=frozenset(match.event),
        points=points,
        decays=decays,
        conditions=tuple(_event_conditions(match)),
        cap_count=cap.count if cap else None,
        cap_span=calendar_span(cap.per) if cap else None,
    )


def _event_conditions(match: EventMatch) -> list[Predicate]:
    conditions: list[Predicate] = []
    if match.url:
        conditions.append(url_matcher(match.url))
    if match.url_regex:
        regex = compile_regex(match.url_regex)
        conditions.append(lambda v: bool(regex.search(_text(v.get("url")))))
    if match.stage:
        stages = frozenset(s.value for s in match.stage)
        conditions.append(lambda v: _stage(v) in stages)
    for key, globs in (("sequence", match.sequence), ("step", match.step)):
        if globs:
            conditions.append(_glob_condition(key, globs))
    if match.data is not None:
        conditions.append(compile_check(match.data, _data_value))
    return conditions


def _glob_condition(key: str, globs: list[str]) -> Predicate:
    regex = _any_glob(globs)
    return lambda v: bool(regex.match(_text(v.get(key))))


def url_matcher(globs: list[str]) -> Predicate:
    """Globs on a URL: ``/blog/*`` matches the path on any host (trailing slash ignored),
    ``https://www.example.com/*`` the whole URL."""
    paths = [g for g in globs if g.startswith("/")]
    fulls = [g for g in globs if not g.startswith("/")]
    path_re = _any_glob(paths) if paths else None
    full_re = _any_glob(fulls) if fulls else None

    def holds(values: Values) -> bool:
        url = _text(values.get("url"))
        if not url:
            return False
        if full_re is not None and full_re.match(url):
            return True
        return path_re is not None and bool(path_re.match(_path(url)))

    return holds


@lru_cache(maxsize=4096)
def _path(url: str) -> str:
    try:
        path = urlsplit(url).path or "/"
    except ValueError:
        return ""
    return path.rstrip("/") or "/"


def _any_glob(globs: list[str]) -> re.Pattern[str]:
    return compile_regex("|".join(f"(?:{glob_regex(g).pattern})" for g in globs))


# -- value tests --------------------------------------------------------------------------


def compile_check(check: Check, lookup: Lookup) -> Predicate:
    """A predicate over a mapping (a lead, or an event's data), looked up by ``lookup``."""
    if check.all is not None:
        parts = [compile_check(c, lookup) for c in check.all]
        return lambda v: all(p(v) for p in parts)
    if check.any is not None:
        parts = [compile_check(c, lookup) for c in check.any]
        return lambda v: any(p(v) for p in parts)
    if check.not_ is not None:
        inner = compile_check(check.not_, lookup)
        return lambda v: not inner(v)
    name = check.attribute or ""
    tests = [_operator(op, expected) for op, expected in check.operators.items()]
    if not tests:  # a bare attribute means "is set"
        return lambda v: _present(lookup(v, name))
    return lambda v: _all_hold(tests, lookup(v, name))


def _all_hold(tests: list[Callable[[Any], bool]], value: Any) -> bool:
    for test in tests:
        try:
            if not test(value):
                return False
        except (TypeError, ValueError):  # "abc" >= 10: a mismatch, not a crash
            return False
    return True


def _operator(op: str, expected: Any) -> Callable[[Any], bool]:
    if op in ("eq", "ne"):
        want = _norm(expected)
        return (lambda v: _norm(v) == want) if op == "eq" else (lambda v: _norm(v) != want)
    if op in ("in", "not_in"):
        options = {_norm(o) for o in expected}
        return (
            (lambda v: _norm(v) in options) if op == "in" else (lambda v: _norm(v) not in options)
        )
    if op in ("gt", "gte", "lt", "lte"):
        return _numeric(op, float(expected))
    if op == "exists":
        return lambda v: _present(v) == bool(expected)
    if op == "contains":
        needle = str(expected).casefold()
        return lambda v: v is not None and needle in str(v).casefold()
    regex = compile_regex(expected) if op == "matches" else _any_glob(list(expected))
    search = regex.search if op == "matches" else regex.match
    return lambda v: v is not None and search(str(v)) is not None


def _numeric(op: str, bound: float) -> Callable[[Any], bool]:
    compare: dict[str, Callable[[float], bool]] = {
        "gt": lambda x: x > bound,
        "gte": lambda x: x >= bound,
        "lt": lambda x: x < bound,
        "lte": lambda x: x <= bound,
    }
    check = compare[op]
    return lambda v: v not in (None, "") and not isinstance(v, bool) and check(float(v))


def _norm(value: Any) -> Any:
    """Text case-insensitively; numbers written as text equal the numbers."""
    if isinstance(value, str):
        text = value.strip()
        return float(text) if _NUMBER.match(text) else text.casefold()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def _present(value: Any) -> bool:
    return value not in (None, "")


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _stage(values: Values) -> str:
    """The content's journey stage: the API stores it as ``content_stage``."""
    return _text(values.get("content_stage") or values.get("stage")).casefold()


def _data_value(values: Values, name: str) -> Any:
    return values.get(name)


def _event_values(event: EventFacts) -> Values:
    # sequence/step may come from the message rather than the data
    if not (event.sequence or event.step):
        return event.data
    return {**event.data, "sequence": event.sequence, "step": event.step}


def _attributes(check: Check) -> tuple[str, ...]:
    names: list[str] = []
    if check.attribute:
        names.append(check.attribute)
    for child in (*(check.all or []), *(check.any or []), *([check.not_] if check.not_ else [])):
        names.extend(n for n in _attributes(child) if n not in names)
    return tuple(names)


def _span_text(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
