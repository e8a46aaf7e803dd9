"""The scoring core: which rules an event or a lead's profile hits, and what a ledger is
worth at a given time. Pure functions of rules, facts and times: no database, no clock.

A lead's score at time ``at`` is the sum, per rule, of its ledger entries, engagement
entries halved every ``half_life`` of age. Each rule's value is rounded to 2 decimals
(in whole cents) and the total is the sum of those rounded values, so every screen that
shows a breakdown shows parts that add up exactly to the total it shows."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol

from nurture.core.conditions import lead_value
from nurture.scoring.rules import (
    CATEGORIES,
    ENGAGEMENT,
    FIT,
    NEGATIVE,
    AttributeRule,
    EventFacts,
    EventRule,
    ScoringRules,
    SilenceRule,
)

# Ledger entries written for the lead's profile (fit and attribute negatives) start with
# this, so a refresh can tell them from entries other parts of the system write.
PROFILE = "profile: "
MAX_DETAIL = 500


class LedgerEntry(Protocol):
    """What the core reads from a ledger row (a ScoreEntry, or a Hit)."""

    @property
    def rule(self) -> str: ...
    @property
    def category(self) -> str: ...
    @property
    def points(self) -> float: ...
    @property
    def decays(self) -> bool: ...
    @property
    def occurred_at(self) -> datetime: ...


@dataclass(frozen=True)
class Hit:
    """A rule hit, as it is written to the ledger. A capped hit has 0 points."""

    rule: str
    category: str
    points: float
    decays: bool
    occurred_at: datetime
    detail: str = ""
    event_id: int | None = None
    capped: bool = False


class ScoreLine(NamedTuple):
    """One ledger entry as a screen shows it: its points and what they are worth now."""

    rule: str
    category: str
    points: float
    decayed: float
    occurred_at: datetime


@dataclass(frozen=True)
class ScoreBreakdown:
    """A lead's score at ``at``: ``by_rule`` sums exactly to ``total``, and the fit,
    engagement and negative parts are the sums of their rules (so they add up too)."""

    at: datetime
    fit: float = 0.0
    engagement: float = 0.0
    negative: float = 0.0
    total: float = 0.0
    by_rule: dict[str, float] = field(default_factory=dict)
    categories: dict[str, str] = field(default_factory=dict)  # rule -> category
    fit_rules: frozenset[str] = frozenset()  # fit rules that hold (non-zero)
    negative_rules: frozenset[str] = frozenset()  # negative rules in effect (non-zero)
    entries: list[ScoreLine] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The breakdown as JSON data (times in ISO 8601)."""
        return {
            "at": self.at.isoformat(),
            "fit": self.fit,
            "engagement": self.engagement,
            "negative": self.negative,
            "total": self.total,
            "by_rule": [
                {"rule": rule, "category": self.categories.get(rule, ""), "points": value}
                for rule, value in self.by_rule.items()
            ],
            "fit_rules": sorted(self.fit_rules),
            "negative_rules": sorted(self.negative_rules),
        }


# -- decay and the breakdown -----------------------------------------------------------


def decayed(points: float, occurred_at: datetime, at: datetime, half_life: timedelta) -> float:
    """``points`` halved for every ``half_life`` of age at ``at``; future entries count fully."""
    age = (at - occurred_at) / half_life
    return points if age <= 0 else points * 0.5**age


def entry_value(entry: LedgerEntry, at: datetime, half_life: timedelta) -> float:
    """What one ledger entry is worth at ``at`` (unrounded)."""
    if not entry.decays:
        return entry.points
    return decayed(entry.points, entry.occurred_at, at, half_life)


def cents(value: float) -> int:
    """A value in whole cents: the one rounding every screen shares."""
    return round(value * 100)


def breakdown(entries: Iterable[LedgerEntry], at: datetime, half_life: timedelta) -> ScoreBreakdown:
    """The score at ``at`` from ledger entries: per-rule values rounded to cents, and
    totals that are exact sums of those rounded values."""
    raw: dict[str, float] = {}
    categories: dict[str, str] = {}
    lines: list[ScoreLine] = []
    for entry in sorted(entries, key=lambda e: e.occurred_at):
        value = entry_value(entry, at, half_life)
        raw[entry.rule] = raw.get(entry.rule, 0.0) + value
        categories.setdefault(entry.rule, entry.category)
        lines.append(
            ScoreLine(entry.rule, entry.category, entry.points, round(value, 2), entry.occurred_at)
        )
    rule_cents = {rule: cents(value) for rule, value in raw.items()}
    order = sorted(rule_cents, key=lambda r: (_category_rank(categories[r]), -rule_cents[r], r))
    part = dict.fromkeys(CATEGORIES, 0)
    held: dict[str, set[str]] = {FIT: set(), NEGATIVE: set()}
    for rule in order:
        category = categories[rule] if categories[rule] in part else ENGAGEMENT
        part[category] += rule_cents[rule]
        if rule_cents[rule] and category in held:
            held[category].add(rule)
    return ScoreBreakdown(
        at=at,
        fit=part[FIT] / 100,
        engagement=part[ENGAGEMENT] / 100,
        negative=part[NEGATIVE] / 100,
        total=sum(part.values()) / 100,
        by_rule={rule: rule_cents[rule] / 100 for rule in order},
        categories={rule: categories[rule] for rule in order},
        fit_rules=frozenset(held[FIT]),
        negative_rules=frozenset(held[NEGATIVE]),
        entries=lines,
    )


def _category_rank(category: str) -> int:
    # Categories other writers might use sort (and count) with engagement.
    return CATEGORIES.index(category) if category in CATEGORIES else 1


# -- profile (fit and attribute negatives) ----------------------------------------------


def lead_facts(lead: Mapping[str, Any]) -> dict[str, Any]:
    """The lead as rules see it: its fields and attributes, plus ``email_domain``."""
    email = str(lead.get("email") or "")
    domain = email.rsplit("@", 1)[1].strip().lower() if "@" in email else ""
    return {**lead, "email_domain": domain}


def fit_hits(rules: ScoringRules, lead: Mapping[str, Any]) -> list[AttributeRule]:
    """The attribute rules (fit, and negatives such as a free-mail domain) the lead passes."""
    facts = lead_facts(lead)
    return [rule for rule in rules.attribute_rules if rule.test(facts)]


def profile_changes(
    rules: ScoringRules, lead: Mapping[str, Any], held: Mapping[str, float], now: datetime
) -> list[Hit]:
    """Ledger entries that bring the profile rules up to date: a rule that now holds gets
    its points, one that stopped holding (or was removed) gets them taken back, one whose
    points changed gets the difference. ``held`` is each profile rule's current sum."""
    facts = lead_facts(lead)
    passing = {rule.name: rule for rule in fit_hits(rules, lead)}
    changes = []
    for rule in rules.attribute_rules:
        current = held.get(rule.name, 0.0)
        target = rule.points if rule.name in passing else 0.0
        if cents(target - current) != 0:
            why = _why(current, target, _explain(rule, facts))
            changes.append(_profile_hit(rule.name, rule.category, target - current, now, why))
    known = {rule.name for rule in rules.attribute_rules}
    for name, current in held.items():
        if name not in known and cents(current) != 0:
            category = FIT if current > 0 else NEGATIVE
            changes.append(_profile_hit(name, category, -current, now, "rule removed"))
    return changes


def _why(current: float, target: float, values: str) -> str:
    if not target:
        return f"no longer holds ({values})"
    return f"points {current:g} -> {target:g} ({values})" if current else values


def _profile_hit(rule: str, category: str, points: float, at: datetime, why: str) -> Hit:
    return Hit(rule, category, points, False, at, _clip(PROFILE + why))


def _explain(rule: AttributeRule, facts: Mapping[str, Any]) -> str:
    parts = [f"{name}={lead_value(facts, name)!r}" for name in rule.attributes]
    return ", ".join(parts)


# -- events --------------------------------------------------------------------------------


def engagement_hits(
    rules: ScoringRules, event: EventFacts, prior: Mapping[str, Sequence[datetime]]
) -> list[Hit]:
    """The hits of one event. ``prior`` holds, per capped rule, the sorted times of this
    lead's earlier counted hits; a hit beyond its rule's cap is kept with 0 points (so the
    timeline can say why it did not count). Non-human events never score."""
    if not event.is_human or event.lead_id is None:
        return []
    hits = []
    for rule in rules.for_event(event.type):
        if rule.matches(event):
            if event.repeat:
                hits.append(_repeat_hit(rule, event, rules))
                continue
            capped = _over_cap(rule, event.occurred_at, prior.get(rule.name, ()))
            hits.append(_event_hit(rule, event, capped))
    return hits


def _repeat_hit(rule: EventRule, event: EventFacts, rules: ScoringRules) -> Hit:
    """A repeated open or click: on the ledger with 0 points, saying why."""
    what = "open of this message" if event.type == "opened" else "click of this link"
    window = _days(rules.repeat_window)
    detail = f"repeat ({what} counted within {window}): {describe_event(event)}"
    return Hit(
        rule=rule.name,
        category=rule.category,
        points=0.0,
        decays=rule.decays,
        occurred_at=event.occurred_at,
        detail=_clip(detail),
        event_id=event.id,
        capped=True,
    )


def _days(span: timedelta) -> str:
    days = span / timedelta(days=1)
    return f"{days:g}d" if days >= 1 else f"{span.total_seconds() / 3600:g}h"


def _over_cap(rule: EventRule, at: datetime, times: Sequence[datetime]) -> bool:
    """Whether ``cap_count`` hits were already counted in the window ``(at - span, at]``."""
    if rule.cap_span is None or rule.cap_count is None:
        return False
    end = bisect_right(times, at)
    start = bisect_right(times, at - rule.cap_span)
    return end - start >= rule.cap_count


def _event_hit(rule: EventRule, event: EventFacts, capped: bool) -> Hit:
    what = describe_event(event)
    detail = f"capped ({rule.cap_text} already counted): {what}" if capped else what
    return Hit(
        rule=rule.name,
        category=rule.category,
        points=0.0 if capped else rule.points,
        decays=rule.decays,
        occurred_at=event.occurred_at,
        detail=_clip(detail),
        event_id=event.id,
        capped=capped,
    )


def describe_event(event: EventFacts) -> str:
    """``page_visit https://...`` or ``clicked finance-leader-decision/roi``: for a timeline."""
    data = event.data
    where = data.get("url") or data.get("title") or ""
    if not where and (event.sequence or event.step):
        where = "/".join(p for p in (event.sequence, event.step) if p)
    return f"{event.type} {where}".strip()


# -- silence -------------------------------------------------------------------------------


def silence_hits(
    rules: ScoringRules, last_engagement: datetime | None, since: datetime, at: datetime
) -> list[Hit]:
    """Silence rules in effect at ``at``: computed when read, never stored, so they lift as
    soon as the lead engages again. Silence counts from the last engagement, or else from
    ``since`` (when the lead was created) if it never engaged."""
    start = last_engagement or since
    return [_silence_hit(rule, start) for rule in rules.silence_rules if at - start >= rule.span]


def _silence_hit(rule: SilenceRule, start: datetime) -> Hit:
    days = rule.span / timedelta(days=1)
    detail = f"no engagement for {days:g}d (since {start:%Y-%m-%d})"
    return Hit(rule.name, NEGATIVE, rule.points, False, start + rule.span, detail)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"
