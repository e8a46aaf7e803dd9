"""The sequence engine: given an enrollment's position, the lead, what it did and ``now``,
decide what happens next. Pure: no database, no clock, no network."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from nurture.core.conditions import NO_EXPRESSIONS, Activity, Expressions, holds
from nurture.sequences.business_days import BusinessCalendar
from nurture.sequences.caps import FrequencyCap, cap_release
from nurture.sequences.spec import BusinessDays, EmailStep, SequenceSpec, Step
from nurture.sequences.timing import add_wait, next_window_opening, resolve_zone

# A sequence whose branches loop without a wait or email would spin forever.
MAX_INSTANT_STEPS = 100
# The business days of a sequence without a business_days block: the lead's, Monday to Friday.
_LEADS_OWN_DAYS = BusinessDays()


@dataclass(frozen=True)
class Position:
    """Where an enrollment stands: its current step and since when it has been enrolled."""

    step_id: str
    entered_at: datetime


@dataclass(frozen=True)
class Context:
    """Everything besides the sequence that the decision depends on."""

    lead: Mapping[str, Any]
    activity: Activity = field(default_factory=Activity)
    # When this lead was sent marketing email recently, across every sequence (for the cap).
    recent_sends: Sequence[datetime] = ()
    suppressed: str = ""  # the suppression reason, if the address is suppressed
    default_timezone: str = "UTC"
    default_locale: str = "en"
    # Whose public holidays business-day waits skip when the lead has no country (ISO code).
    default_country: str = ""
    cap: FrequencyCap = field(default_factory=lambda: FrequencyCap(3, timedelta(days=7)))
    # Evaluates branch ``expr:`` conditions (the sandbox's compiler, handed in).
    expressions: Expressions = NO_EXPRESSIONS


@dataclass(frozen=True)
class SendEmail:
    step_id: str
    template: str
    subject: str
    locale: str
    next_step: str | None  # None: the sequence ends after this email


@dataclass(frozen=True)
class WaitUntil:
    step_id: str  # the step that runs when the wait is over
    run_at: datetime


@dataclass(frozen=True)
class Defer:
    step_id: str
    run_at: datetime
    reason: str  # "window" or "cap"


@dataclass(frozen=True)
class MoveToStage:
    step_id: str
    journey_stage: str


@dataclass(frozen=True)
class Exit:
    step_id: str
    reason: str


@dataclass(frozen=True)
class Complete:
    step_id: str


Decision = SendEmail | WaitUntil | Defer | MoveToStage | Exit | Complete


def decide(spec: SequenceSpec, position: Position, ctx: Context, now: datetime) -> Decision:
    """What the enrollment does next. Branches resolve at once; the walk stops at the first
    step that sends, waits, moves the lead or ends the enrollment."""
    goal = goal_reached(spec, position, ctx)
    if goal:
        return Exit(position.step_id, goal)
    step_id: str | None = position.step_id
    for _ in range(MAX_INSTANT_STEPS):
        step = spec.step(step_id) if step_id else None
        if step is None:
            return Complete(step_id or position.step_id)
        if step.branch is None:
            return _act(spec, step, ctx, now)
        taken = holds(step.branch.if_, ctx.lead, ctx.activity, now, ctx.expressions)
        step_id = step.branch.then if taken else (step.branch.else_ or next_step_id(spec, step))
    return Exit(position.step_id, "stopped: branches loop without a wait or an email")


def goal_reached(spec: SequenceSpec, position: Position, ctx: Context) -> str:
    """Why the lead must leave now ("" if it stays): suppression, a goal, or the audience."""
    if ctx.suppressed:
        return f"suppressed: {ctx.suppressed}"
    stage = str(ctx.lead.get("lifecycle_stage", ""))
    if stage in spec.exit_when.lifecycle_stages:
        return f"goal reached: lifecycle stage {stage}"
    for event_type in spec.exit_when.events:
        if ctx.activity.saw_event(event_type, position.entered_at):
            return f"goal reached: {event_type}"
    if stage not in spec.audience.lifecycle_stages:
        return f"left the audience: lifecycle stage {stage}"
    return ""


def next_step_id(spec: SequenceSpec, step: Step) -> str | None:
    index = spec.index_of(step.id) + 1
    return spec.steps[index].id if index < len(spec.steps) else None


def _act(spec: SequenceSpec, step: Step, ctx: Context, now: datetime) -> Decision:
    zone = resolve_zone(str(ctx.lead.get("timezone") or ""), spec.send_window, ctx.default_timezone)
    if step.wait is not None:
        after = next_step_id(spec, step)
        run_at = add_wait(now, step.wait, zone, business_calendar(spec, ctx).is_business_day)
        return WaitUntil(after, run_at) if after else Complete(step.id)
    if step.email is not None:
        return _send_or_defer(spec, step, step.email, ctx, now)
    if step.move_to_stage is not None:
        return MoveToStage(step.id, step.move_to_stage.value)
    return Exit(step.id, step.exit or "exit step")


def business_calendar(spec: SequenceSpec, ctx: Context) -> BusinessCalendar:
    """The days the lead's business-day waits count. Public holidays: the sequence's
    ``business_days.country`` if it names one ("none": no holidays), else the lead's
    country, else ``ctx.default_country``, else none (weekends only)."""
    rule = spec.business_days or _LEADS_OWN_DAYS
    country = rule.country
    if country == "lead":
        country = str(ctx.lead.get("country") or "") or ctx.default_country
    country = "" if country == "none" else country
    return BusinessCalendar.of(country, rule.extra_holidays, rule.weekdays)


def _send_or_defer(
    spec: SequenceSpec, step: Step, email: EmailStep, ctx: Context, now: datetime
) -> Decision:
    run_at, reason = earliest_send(spec, ctx, now)
    if run_at > now:
        return Defer(step.id, run_at, reason)
    locale = str(ctx.lead.get("locale") or ctx.default_locale)
    template, subject = email.for_locale(locale)
    return SendEmail(step.id, template, subject, locale, next_step_id(spec, step))


def earliest_send(spec: SequenceSpec, ctx: Context, now: datetime) -> tuple[datetime, str]:
    """The first instant at or after ``now`` inside the send window and under the cap,
    and the last thing that held it back ("window" or "cap"; "" when nothing did)."""
    zone = resolve_zone(str(ctx.lead.get("timezone") or ""), spec.send_window, ctx.default_timezone)
    at, reason = now, ""
    # Each round moves forward; window and cap settle within a few rounds.
    for _ in range(ctx.cap.max_messages + 8):
        opening = next_window_opening(at, spec.send_window, zone)
        if opening > at:
            at, reason = opening, "window"
        release = cap_release(ctx.recent_sends, at, ctx.cap)
        if release is None:
            return at, reason
        at, reason = release, "cap"
    return at, reason
