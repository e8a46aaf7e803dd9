"""The shape of ``sequences/scoring.yaml`` (``kind: scoring``), as pydantic models.

Three sections of named rules: ``fit`` (who the lead is: ICP and persona; never decays),
``engagement`` (what the lead did: events; decays with ``half_life``) and ``negative``
(unsubscribes, bounces, free-mail or competitor domains, long silence). Rule names are the
mapping keys and appear as they are in every breakdown."""

from __future__ import annotations

import fnmatch
import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from nurture.core.durations import Duration
from nurture.core.schema import DurationText
from nurture.core.stages import JourneyStage
from nurture.core.vocabulary import (  # noqa: F401 - re-exported for scoring callers
    DELIVERY_EVENTS,
    EMAIL_EVENTS,
    ENGAGEMENT_EVENTS,
    KNOWN_EVENTS,
    SITE_EVENTS,
)

SCORING_KIND = "scoring"
DEFAULT_HALF_LIFE = "90d"
# A human open of a message, or click of one of its links, scores once in this window:
# the same link clicked again (a reader coming back, a replayed request) adds nothing.
DEFAULT_REPEAT_WINDOW = "30d"
MAX_RULE_NAME = 120  # the ledger's rule column


RuleName = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9][a-z0-9_\-]*$", max_length=MAX_RULE_NAME),
]


def _as_list(value: Any) -> Any:
    """A single value where a list is expected: ``stage: decision`` = ``stage: [decision]``."""
    return [value] if isinstance(value, str | int | float) else value


Strings = Annotated[list[str], BeforeValidator(_as_list)]
Stages = Annotated[list[JourneyStage], BeforeValidator(_as_list)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def calendar_span(duration: Duration) -> timedelta:
    """The span of a calendar duration; business days mean nothing for decay or caps."""
    if duration.is_business:
        raise ValueError(f"use calendar time such as '7d' or '12h', not {str(duration)!r}")
    if duration.span <= timedelta(0):
        raise ValueError(f"must be longer than 0, got {str(duration)!r}")
    return duration.span


def compile_regex(pattern: str) -> re.Pattern[str]:
    """A case-insensitive regex, or ValueError naming what is wrong with it."""
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"bad regular expression {pattern!r}: {exc}") from None


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A shell-style glob (``*``, ``?``, ``[abc]``) as a case-insensitive regex."""
    return compile_regex(fnmatch.translate(pattern))


class Check(Strict):
    """A test on one value (a lead attribute, or a key of an event's data), or a
    combination of tests. Operators given together must all hold; text compares
    case-insensitively."""

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
    matches: str | None = None
    glob: Strings | None = None
    all: list[Check] | None = None
    any: list[Check] | None = None
    not_: Check | None = Field(default=None, alias="not")

    @field_validator("matches")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            compile_regex(value)
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Check:
        kinds = [k for k in ("attribute", "all", "any", "not_") if getattr(self, k) is not None]
        if len(kinds) != 1:
            got = ", ".join(k.rstrip("_") for k in kinds) or "none"
            raise ValueError(f"a test needs exactly one of attribute, all, any, not; got {got}")
        if self.attribute is None and self.operators:
            raise ValueError("operators such as 'in' or 'matches' go with 'attribute'")
        return self

    @property
    def operators(self) -> dict[str, Any]:
        """The operators that were set, by their YAML names."""
        ops = ("eq", "ne", "in_", "not_in", "gt", "gte", "lt", "lte", "exists", "contains")
        names = (*ops, "matches", "glob")
        return {op.rstrip("_"): getattr(self, op) for op in names if op in self.model_fields_set}


class Cap(Strict):
    """At most ``count`` hits of a rule counted per lead in any window of ``per``."""

    count: int = Field(ge=1)
    per: DurationText

    @field_validator("per")
    @classmethod
    def _calendar(cls, value: Duration) -> Duration:
        calendar_span(value)
        return value


class FitRule(Strict):
    """Points while the lead's attributes pass the test (re-checked when they change)."""

    points: float
    if_: Check = Field(alias="if")
    description: str = ""

    @field_validator("points")
    @classmethod
    def _nonzero(cls, value: float) -> float:
        return _nonzero_points(value)


class EventMatch(Strict):
    """Which events a rule counts: by type, then every condition given must hold."""

    event: Strings = Field(min_length=1)
    # Globs on data.url: a pattern starting with '/' matches the URL's path on any host.
    url: Strings | None = None
    url_regex: str | None = None
    # The content's journey stage (data.content_stage): awareness, consideration, decision.
    stage: Stages | None = None
    # Globs on the email's sequence key and step id (data or the event's message).
    sequence: Strings | None = None
    step: Strings | None = None
    data: Check | None = None

    @field_validator("url_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            compile_regex(value)
        return value


class EngagementRule(EventMatch):
    """Points for each matching event; they decay with the half-life unless told not to."""

    points: float
    cap: Cap | None = None
    decays: bool = True
    description: str = ""

    @field_validator("points")
    @classmethod
    def _nonzero(cls, value: float) -> float:
        return _nonzero_points(value)


class NegativeRule(EventMatch):
    """Points taken away: for an event (unsubscribed, bounced), for the lead's attributes
    (free-mail or competitor domain), or for silence (no engagement for ``silent_for``)."""

    points: float
    event: Strings | None = None  # type: ignore[assignment]
    cap: Cap | None = None
    decays: bool | None = None
    if_: Check | None = Field(default=None, alias="if")
    silent_for: DurationText | None = None
    description: str = ""

    @field_validator("points")
    @classmethod
    def _below_zero(cls, value: float) -> float:
        if value >= 0:
            raise ValueError(f"negative rules take points below 0, got {value:g}")
        return value

    @field_validator("silent_for")
    @classmethod
    def _calendar(cls, value: Duration | None) -> Duration | None:
        if value is not None:
            calendar_span(value)
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> NegativeRule:
        kinds = [k for k in ("event", "if_", "silent_for") if getattr(self, k) is not None]
        if len(kinds) != 1:
            got = ", ".join(k.rstrip("_") for k in kinds) or "none"
            raise ValueError(
                f"a negative rule needs exactly one of event, if, silent_for; got {got}"
            )
        if self.event is None:
            event_only = ("url", "url_regex", "stage", "sequence", "step", "data", "cap", "decays")
            extra = [k for k in event_only if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"{', '.join(extra)}: only for rules with an 'event'")
        return self

    @property
    def kind(self) -> str:
        """``event``, ``attribute`` or ``silence``."""
        if self.event is not None:
            return "event"
        return "attribute" if self.if_ is not None else "silence"


class ScoringSpec(Strict):
    """``scoring.yaml`` as authored."""

    description: str = ""
    half_life: DurationText = Field(default=DEFAULT_HALF_LIFE, validate_default=True)
    repeat_window: DurationText = Field(default=DEFAULT_REPEAT_WINDOW, validate_default=True)
    fit: dict[RuleName, FitRule] = Field(default_factory=dict)
    engagement: dict[RuleName, EngagementRule] = Field(default_factory=dict)
    negative: dict[RuleName, NegativeRule] = Field(default_factory=dict)

    @field_validator("half_life", "repeat_window")
    @classmethod
    def _calendar(cls, value: Duration) -> Duration:
        calendar_span(value)
        return value


def _nonzero_points(value: float) -> float:
    if value == 0:
        raise ValueError("0 scores nothing; give the rule points or remove it")
    return value
