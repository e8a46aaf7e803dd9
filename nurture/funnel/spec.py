"""The shape of ``lifecycle.yaml`` (``kind: lifecycle``), as pydantic models.

Sections: ``mql`` (when a lead becomes an MQL), ``exclusions`` (ICP exclusions: never an
MQL however active), ``fast_track`` (buying signals that bypass the score), ``stages``
(a stage's own sequence), ``sales`` (BANT fields a qualification needs, reject reasons with
their re-nurture sequence, cool-down and engagement policy), ``sla`` (business days per
stage, holiday calendar) and ``handoff`` (who is told, where)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from nurture.core.conditions import Condition
from nurture.core.durations import Duration
from nurture.core.schema import DurationText, Strict
from nurture.core.stages import LifecycleStage

LIFECYCLE_KIND = "lifecycle"
BantField = Literal["budget", "authority", "need", "timeline"]
BANT_FIELDS: tuple[BantField, ...] = ("budget", "authority", "need", "timeline")
# Stages whose sales decision has a deadline (what a hand-off waits for).
SLA_STAGES = ("mql", "sal", "sql")
# Stages that may have a sequence of their own (marketing's help while sales works).
SEQUENCE_STAGES = ("mql", "sal", "sql", "opportunity", "customer")

Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_\-]*$", max_length=64)]
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class MqlRule(Strict):
    """MQL when the score reaches ``min_score`` and every named fit rule holds."""

    name: Name
    min_score: float
    # Fit rules of scoring.yaml that must all hold, e.g. [decision_maker].
    fit: list[str] = Field(default_factory=list)
    description: str = ""


class Mql(Strict):
    """A lead becomes an MQL when any rule holds (and no exclusion matches)."""

    rules: list[MqlRule] = Field(min_length=1)


class Exclusion(Strict):
    """An ICP exclusion: a lead it matches never becomes an MQL, and ``reason`` says why.

    The test sees every lead field and attribute, plus ``email_domain``."""

    name: Name
    reason: str = Field(min_length=1)
    if_: Condition = Field(alias="if")

    @field_validator("if_")
    @classmethod
    def _lead_only(cls, condition: Condition) -> Condition:
        if condition.opened or condition.clicked or condition.event:
            raise ValueError("an exclusion tests who the lead is (attribute, expr), not events")
        return condition


class FastTrack(Strict):
    """A buying signal: ``count`` events of ``event`` within ``within`` send the lead
    straight to sales: to ``sql``, or to ``mql`` marked hot."""

    name: Name
    event: str = Field(min_length=1)
    count: int = Field(default=1, ge=1)
    within: DurationText | None = None
    to: Literal["sql", "mql"] = "sql"

    @model_validator(mode="after")
    def _window(self) -> FastTrack:
        if self.count > 1 and self.within is None:
            raise ValueError(f"count {self.count} needs a window, e.g. within: 7d")
        if self.within is not None and self.within.is_business:
            raise ValueError("within: use calendar time such as '7d'")
        return self


class StageTrack(Strict):
    """What reaching a stage does to the lead's sequences."""

    sequence: str | None = None


class RejectReason(Strict):
    """A reason sales may reject a lead for, and how marketing takes it back."""

    label: str = ""
    cooldown: DurationText
    # The re-nurture sequence entered when the cool-down ends (None: back to ``lead`` and
    # the track of the lead's persona and journey stage).
    sequence: str | None = None
    # Re-nurture sequences written for one persona; the others get ``sequence``.
    by_persona: dict[str, str] = Field(default_factory=dict)
    # Share of the engagement score kept: 0 resets it, 1 keeps it all.
    keep_engagement: float = Field(default=0.0, ge=0.0, le=1.0)

    @field_validator("cooldown")
    @classmethod
    def _calendar(cls, value: Duration) -> Duration:
        if value.is_business:
            raise ValueError("cooldown: use calendar time such as '90d'")
        return value

    def sequence_for(self, persona: str) -> str | None:
        """The re-nurture sequence of a lead of ``persona`` (None: its usual track)."""
        return self.by_persona.get(persona) or self.sequence


class Sales(Strict):
    """What sales decisions need."""

    qualify_requires: list[BantField] = Field(default_factory=lambda: list(BANT_FIELDS))
    reject_reasons: dict[Name, RejectReason] = Field(min_length=1)
    # Shown when a disqualification gives no reason code; codes are free text otherwise.
    disqualify_reasons: list[Name] = Field(default_factory=list)


class Sla(Strict):
    """How long sales has to act on a lead in a stage, in business days."""

    mql: DurationText | None = None
    sal: DurationText | None = None
    sql: DurationText | None = None
    # Holiday calendar for leads without a country (ISO 3166 alpha-2, e.g. US, KR).
    country: str = ""
    # Extra days off for everyone (company holidays), as YYYY-MM-DD.
    extra_holidays: list[str] = Field(default_factory=list)

    @field_validator("mql", "sal", "sql")
    @classmethod
    def _business(cls, value: Duration | None) -> Duration | None:
        if value is not None and not value.is_business:
            raise ValueError("an SLA counts business days, e.g. '1 business day'")
        return value

    @field_validator("country")
    @classmethod
    def _country(cls, value: str) -> str:
        if value and not _COUNTRY.match(value.upper()):
            raise ValueError(f"country must be a two-letter code such as US or KR, got {value!r}")
        return value.upper()

    @field_validator("extra_holidays")
    @classmethod
    def _dates(cls, values: list[str]) -> list[str]:
        bad = [v for v in values if not re.match(r"^\d{4}-\d{2}-\d{2}$", str(v))]
        if bad:
            raise ValueError(f"extra_holidays: dates as YYYY-MM-DD, got {bad}")
        return [str(v) for v in values]

    def for_stage(self, stage: str) -> Duration | None:
        """The SLA of ``stage`` (None: no deadline)."""
        value: Duration | None = getattr(self, stage, None) if stage in SLA_STAGES else None
        return value


class Target(Strict):
    """A webhook URL."""

    url: str = Field(min_length=1)

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {value!r}")
        return value


class WebhookTarget(Target):
    """A JSON webhook URL, and the environment variable that holds its own signing secret
    (none: NURTURE_WEBHOOK_SECRET). The secret itself is never written in the YAML."""

    secret_env: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_secret(cls, data: object) -> object:
        if isinstance(data, dict) and "secret" in data:
            raise ValueError(
                "a secret is never written in lifecycle.yaml: put it in an environment "
                "variable and name that variable with secret_env"
            )
        return data

    @field_validator("secret_env")
    @classmethod
    def _variable(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(
                f"secret_env names an environment variable, e.g. CRM_WEBHOOK_SECRET; got {value!r}"
            )
        return value


class Handoff(Strict):
    """Who hears about a hand-off, and what it carries."""

    # Signed JSON webhooks (secret: the target's secret_env, else NURTURE_WEBHOOK_SECRET).
    webhooks: list[WebhookTarget] = Field(default_factory=list)
    # Slack-compatible incoming webhooks ({"text": ..., "blocks": [...]}).
    slack: list[Target] = Field(default_factory=list)
    # Owner of leads that have none (a team inbox or a queue name).
    default_owner: str = ""
    # How many of the lead's latest events and messages the context lists.
    recent: int = Field(default=10, ge=1, le=100)
    # Attempts per delivery before it is marked failed.
    max_attempts: int = Field(default=8, ge=1, le=50)


class LifecycleSpec(Strict):
    """``lifecycle.yaml`` as authored."""

    description: str = ""
    mql: Mql
    exclusions: list[Exclusion] = Field(default_factory=list)
    fast_track: list[FastTrack] = Field(default_factory=list)
    stages: dict[LifecycleStage, StageTrack] = Field(default_factory=dict)
    sales: Sales
    sla: Sla = Field(default_factory=Sla)
    handoff: Handoff = Field(default_factory=Handoff)

    @field_validator("stages")
    @classmethod
    def _stages(cls, value: dict[LifecycleStage, StageTrack]) -> dict[LifecycleStage, StageTrack]:
        bad = [s.value for s in value if s.value not in SEQUENCE_STAGES]
        if bad:
            allowed = ", ".join(SEQUENCE_STAGES)
            raise ValueError(f"stages: only {allowed} may have a sequence, got {', '.join(bad)}")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> LifecycleSpec:
        for section, names in (
            ("mql.rules", [r.name for r in self.mql.rules]),
            ("exclusions", [e.name for e in self.exclusions]),
            ("fast_track", [f.name for f in self.fast_track]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{section}: duplicate name {', '.join(dupes)}")
        return self

    def stage_sequence(self, stage: str) -> str | None:
        """The sequence a lead enters on reaching ``stage`` (None: none)."""
        track = self.stages.get(LifecycleStage(stage)) if stage in SEQUENCE_STAGES else None
        return track.sequence if track else None

    def reject_reason(self, code: str) -> RejectReason | None:
        return self.sales.reject_reasons.get(code)
