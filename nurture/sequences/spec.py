"""The shape of a sequence YAML file, as pydantic models (schema checks only; meaning is
checked by :mod:`nurture.program.validate`)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from datetime import date, time
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Literal
from zoneinfo import available_timezones

import holidays
from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from nurture.core.conditions import Condition
from nurture.core.schema import DurationText, Strict
from nurture.core.stages import NURTURABLE_STAGES, JourneyStage, LifecycleStage
from nurture.core.zones import is_valid_timezone

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_STEP_ID = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_HOURS = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")
# The validation context of sequence files as written. Some checks run only there: a version
# stored before the check existed must still read (the engine falls back from a bad zone).
AUTHORED: Mapping[str, bool] = MappingProxyType({"authored": True})


class Audience(Strict):
    """Who enters: personas x journey stages, optionally only some lifecycle stages."""

    personas: list[str] = Field(min_length=1)
    journey_stages: list[JourneyStage] = Field(min_length=1)
    lifecycle_stages: list[LifecycleStage] = Field(default_factory=lambda: list(NURTURABLE_STAGES))


class Entry(Strict):
    """Enter once ever, or again after a cool-down since the last exit."""

    policy: Literal["once", "again"] = "once"
    cooldown: DurationText | None = None

    @model_validator(mode="after")
    def _cooldown_needed(self) -> Entry:
        if self.policy == "again" and self.cooldown is None:
            raise ValueError("entry policy 'again' needs a cooldown, e.g. cooldown: 90d")
        return self


class SendWindow(Strict):
    """When mail may go out, in the lead's own time zone (or a fixed one)."""

    days: list[str] = Field(default_factory=lambda: list(WEEKDAYS[:5]))
    hours: str = "09:00-17:00"
    timezone: str = "lead"

    @field_validator("days")
    @classmethod
    def _days(cls, days: list[str]) -> list[str]:
        return _weekday_names(days)

    @field_validator("hours")
    @classmethod
    def _hours(cls, hours: str) -> str:
        match = _HOURS.match(hours.strip())
        if not match:
            raise ValueError(f"hours must look like '09:00-17:00', got {hours!r}")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if not (0 <= h1 < 24 and 0 <= h2 <= 24 and m1 < 60 and m2 < 60):
            raise ValueError(f"hours out of range: {hours!r}")
        if (h1, m1) >= (h2, m2):
            raise ValueError(f"window must end after it starts (no overnight windows): {hours!r}")
        return hours.strip()

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, name: str, info: ValidationInfo) -> str:
        if name == "lead" or not (info.context or {}).get("authored") or is_valid_timezone(name):
            return name
        close = difflib.get_close_matches(name, sorted(_zones()), n=1, cutoff=0.7)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(
            f"unknown time zone {name!r}{hint}: "
            "use an IANA name such as 'Asia/Seoul', or 'lead' for the lead's own zone"
        )

    @property
    def start(self) -> time:
        h, m = _HOURS.match(self.hours).groups()[:2]  # type: ignore[union-attr]
        return time(int(h), int(m))

    @property
    def end(self) -> time:
        h, m = _HOURS.match(self.hours).groups()[2:]  # type: ignore[union-attr]
        return time(23, 59, 59) if int(h) == 24 else time(int(h), int(m))

    @property
    def weekdays(self) -> frozenset[int]:
        """Python weekday numbers (Monday is 0)."""
        return frozenset(WEEKDAYS.index(d) for d in self.days)


def _weekday_names(days: list[str]) -> list[str]:
    bad = [d for d in days if d.lower()[:3] not in WEEKDAYS]
    if bad or not days:
        raise ValueError(f"days must be among {', '.join(WEEKDAYS)}; got {bad or 'none'}")
    return [d.lower()[:3] for d in days]


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


class BusinessDays(Strict):
    """Which days this sequence's "N business days" waits count. Without it: Monday to
    Friday less the public holidays of the lead's country (else of the default country)."""

    # Whose public holidays: "lead" (the lead's country, else NURTURE_DEFAULT_COUNTRY),
    # "none" (no public holidays), or a country code with a calendar, for every lead.
    country: str = "lead"
    # Company days off on top of the public holidays, as YYYY-MM-DD.
    extra_holidays: list[date] = Field(default_factory=list)
    days: list[str] = Field(default_factory=lambda: list(WEEKDAYS[:5]))

    @field_validator("days")
    @classmethod
    def _days(cls, days: list[str]) -> list[str]:
        return _weekday_names(days)

    @field_validator("country", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        if isinstance(value, bool):  # YAML 1.1 reads a bare NO (Norway) as false
            raise ValueError("country must be text: write Norway as 'NO', in quotes")
        return value

    @field_validator("country")
    @classmethod
    def _country(cls, value: str, info: ValidationInfo) -> str:
        code = value.strip()
        if code.lower() in ("lead", "none"):
            return code.lower()
        # Stored versions read as they were: the engine treats an unknown code as "none".
        if code.upper() in _holiday_countries() or not (info.context or {}).get("authored"):
            return code.upper()
        raise ValueError(
            f"unknown country {value!r}: use an ISO 3166 code with a holiday calendar "
            "such as KR, US or DE, 'lead' for the lead's own country, or 'none'"
        )

    @property
    def weekdays(self) -> frozenset[int]:
        """Python weekday numbers (Monday is 0)."""
        return frozenset(WEEKDAYS.index(d) for d in self.days)


@lru_cache(maxsize=1)
def _holiday_countries() -> frozenset[str]:
    return frozenset(holidays.list_supported_countries())


class ExitWhen(Strict):
    """Goals: the lead leaves the sequence when one holds."""

    lifecycle_stages: list[LifecycleStage] = Field(default_factory=list)
    events: list[str] = Field(default_factory=list)


class Versioning(Strict):
    """What happens to enrolled leads when the sequence changes.

    ``finish``: they finish the version they started. ``move``: they continue in the new
    version at the step with the same id (or the one ``step_map`` names)."""

    on_change: Literal["finish", "move"] = "finish"
    step_map: dict[str, str] = Field(default_factory=dict)


class LocaleOverride(Strict):
    subject: str | None = None
    template: str | None = None


class EmailStep(Strict):
    template: str
    subject: str
    locales: dict[str, LocaleOverride] = Field(default_factory=dict)

    def for_locale(self, locale: str) -> tuple[str, str]:
        """(template, subject) for a locale, falling back ``ko-KR`` -> ``ko`` -> default."""
        for candidate in (locale, locale.split("-")[0].split("_")[0]):
            override = self.locales.get(candidate)
            if override:
                return override.template or self.template, override.subject or self.subject
        return self.template, self.subject


class Branch(Strict):
    if_: Condition = Field(alias="if")
    then: str
    else_: str | None = Field(default=None, alias="else")


class Step(Strict):
    """One step: exactly one of wait, email, branch, move_to_stage, exit."""

    id: str = ""
    wait: DurationText | None = None
    email: EmailStep | None = None
    branch: Branch | None = None
    move_to_stage: JourneyStage | None = None
    exit: str | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if value and not _STEP_ID.match(value):
            raise ValueError(f"step id {value!r}: use lower-case letters, digits, '-' and '_'")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        kinds = [
            k for k in ("wait", "email", "branch", "move_to_stage", "exit") if getattr(self, k)
        ]
        if len(kinds) != 1:
            raise ValueError(
                "a step needs exactly one of wait, email, branch, move_to_stage, exit; "
                f"got {', '.join(kinds) or 'none'}"
            )
        return self

    @property
    def kind(self) -> str:
        return next(
            k for k in ("wait", "email", "branch", "move_to_stage", "exit") if getattr(self, k)
        )


class SequenceSpec(Strict):
    """A drip sequence as authored in ``sequences/*.yaml``."""

    key: str
    name: str
    description: str = ""
    audience: Audience
    entry: Entry = Field(default_factory=Entry)
    send_window: SendWindow | None = None
    business_days: BusinessDays | None = None
    exit_when: ExitWhen = Field(default_factory=ExitWhen, alias="exit")
    versioning: Versioning = Field(default_factory=Versioning)
    steps: list[Step] = Field(min_length=1)

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not _STEP_ID.match(value):
            raise ValueError(f"key {value!r}: use lower-case letters, digits, '-' and '_'")
        return value

    @model_validator(mode="after")
    def _step_ids(self) -> SequenceSpec:
        # Steps without an id get a positional one, so branches and messages can name them.
        steps = [
            s if s.id else s.model_copy(update={"id": f"step-{n}"})
            for n, s in enumerate(self.steps, start=1)
        ]
        object.__setattr__(self, "steps", steps)
        return self

    def step(self, step_id: str) -> Step | None:
        return next((s for s in self.steps if s.id == step_id), None)

    def index_of(self, step_id: str) -> int:
        return next(i for i, s in enumerate(self.steps) if s.id == step_id)
