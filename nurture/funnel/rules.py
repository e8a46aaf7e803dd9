"""What ``lifecycle.yaml`` says about one lead now (pure: facts in, a decision out).

Order: only marketing's leads move on their own (subscriber, lead, recycled); an ICP
exclusion stops everything automatic and says why; a fast-track trigger goes first (an
explicit buying signal beats any score, and works during a cool-down too); then the MQL
rules, except while a recycled lead cools down."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nurture.core.conditions import NO_EXPRESSIONS, Activity, Expressions, holds
from nurture.funnel.machine import MARKETING_STAGES, ReasonKind, Stage
from nurture.funnel.spec import Exclusion, FastTrack, LifecycleSpec, MqlRule


@dataclass(frozen=True)
class ScoreView:
    """The parts of a score breakdown the rules read."""

    total: float
    fit_rules: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RuleCheck:
    """One MQL rule or trigger, and whether it holds (``why`` explains either way)."""

    name: str
    holds: bool
    why: str


@dataclass(frozen=True)
class Promotion:
    """Move the lead to ``target`` (``hot``: an MQL from a fast-track trigger)."""

    target: Stage
    kind: ReasonKind
    rule: str
    detail: str
    hot: bool = False


@dataclass(frozen=True)
class Assessment:
    """Everything the rules found, and the decision (None: the lead stays)."""

    stage: str
    exclusions: list[tuple[str, str]] = field(default_factory=list)
    rules: list[RuleCheck] = field(default_factory=list)
    triggers: list[RuleCheck] = field(default_factory=list)
    cooling_until: datetime | None = None
    promotion: Promotion | None = None
    why_not: str = ""

    @property
    def excluded(self) -> bool:
        return bool(self.exclusions)


def exclusion_facts(lead: Mapping[str, Any]) -> dict[str, Any]:
    """The lead as exclusion tests see it: its fields, plus ``email_domain``."""
    email = str(lead.get("email") or "")
    return {**lead, "email_domain": email.rpartition("@")[2].lower()}


def matching_exclusions(
    exclusions: Sequence[Exclusion],
    lead: Mapping[str, Any],
    now: datetime,
    expressions: Expressions = NO_EXPRESSIONS,
) -> list[tuple[str, str]]:
    """(name, reason) of every ICP exclusion the lead matches."""
    facts = exclusion_facts(lead)
    return [
        (e.name, e.reason) for e in exclusions if holds(e.if_, facts, Activity(), now, expressions)
    ]


def check_rule(rule: MqlRule, score: ScoreView) -> RuleCheck:
    """Whether one MQL rule holds for this score."""
    missing = [name for name in rule.fit if name not in score.fit_rules]
    enough = score.total >= rule.min_score
    parts = [f"score {score.total:g} {'>=' if enough else '<'} {rule.min_score:g}"]
    if rule.fit:
        parts.append(
            f"fit {', '.join(missing)} missing" if missing else f"fit {', '.join(rule.fit)}"
        )
    return RuleCheck(rule.name, enough and not missing, "; ".join(parts))


def check_trigger(
    trigger: FastTrack,
    events: Sequence[tuple[str, datetime]],
    since: datetime | None,
    now: datetime,
) -> RuleCheck:
    """Whether a fast-track trigger fired: enough events of its type, recent enough."""
    start = since
    if trigger.within is not None:
        window_start = now - trigger.within.span
        start = window_start if start is None else max(start, window_start)
    count = sum(
        1
        for kind, at in events
        if kind == trigger.event and (start is None or at >= start) and at <= now
    )
    window = f" within {trigger.within}" if trigger.within else ""
    why = f"{count} x {trigger.event}{window} (needs {trigger.count})"
    return RuleCheck(trigger.name, count >= trigger.count, why)


def may_promote(
    spec: LifecycleSpec,
    score: ScoreView,
    events: Sequence[tuple[str, datetime]],
    since: datetime | None,
    now: datetime,
) -> bool:
    """Whether some MQL rule or fast-track trigger holds: without one, :func:`assess`
    promotes nothing, whatever the exclusions say (which cost the most to check)."""
    return any(check_rule(rule, score).holds for rule in spec.mql.rules) or any(
        check_trigger(trigger, events, since, now).holds for trigger in spec.fast_track
    )


def assess(
    spec: LifecycleSpec,
    lead: Mapping[str, Any],
    score: ScoreView,
    events: Sequence[tuple[str, datetime]],
    since: datetime | None,
    recycle_until: datetime | None,
    now: datetime,
    expressions: Expressions = NO_EXPRESSIONS,
) -> Assessment:
    """What the rules say about ``lead`` at ``now``. ``events`` are its human events
    (type, time); only those after ``since`` (the start of its current stage) count."""
    stage = str(lead.get("lifecycle_stage") or "")
    excluded = matching_exclusions(spec.exclusions, lead, now, expressions)
    rules = [check_rule(rule, score) for rule in spec.mql.rules]
    triggers = [check_trigger(t, events, since, now) for t in spec.fast_track]
    cooling = (
        recycle_until if stage == Stage.recycled and recycle_until and recycle_until > now else None
    )
    found = Assessment(stage, excluded, rules, triggers, cooling)
    promotion, why_not = _decide(spec, found)
    return Assessment(stage, excluded, rules, triggers, cooling, promotion, why_not)


def _decide(spec: LifecycleSpec, found: Assessment) -> tuple[Promotion | None, str]:
    if found.stage not in MARKETING_STAGES:
        return None, f"{found.stage or 'no stage'}: not marketing's lead any more"
    if found.excluded:
        return None, "excluded: " + "; ".join(reason for _, reason in found.exclusions)
    fired = {check.name for check in found.triggers if check.holds}
    # An explicit buying signal to SQL beats one to a hot MQL; then file order.
    for trigger in sorted(spec.fast_track, key=lambda t: t.to != "sql"):
        if trigger.name in fired:
            check = next(c for c in found.triggers if c.name == trigger.name)
            target = Stage.sql if trigger.to == "sql" else Stage.mql
            detail = f"fast track {trigger.name}: {check.why}"
            return Promotion(
                target, ReasonKind.trigger, trigger.name, detail, hot=target is Stage.mql
            ), ""
    if found.cooling_until is not None:
        return None, f"recycled: cool-down until {found.cooling_until:%Y-%m-%d %H:%M} UTC"
    for check in found.rules:
        if check.holds:
            return Promotion(
                Stage.mql, ReasonKind.rule, check.name, f"MQL rule {check.name}: {check.why}"
            ), ""
    return None, "no MQL rule holds: " + "; ".join(f"{c.name}: {c.why}" for c in found.rules)
