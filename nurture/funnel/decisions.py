"""Sales decisions as data, and what each needs (pure): the API body and the CLI options
become a :class:`SalesDecision`; :func:`problems` says what is missing or unknown."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from nurture.funnel.machine import Stage
from nurture.funnel.spec import BANT_FIELDS, LifecycleSpec

Decision = Literal["accept", "qualify", "reject", "disqualify", "opportunity", "customer"]
# What each decision moves the lead to.
TARGETS: dict[str, Stage] = {
    "accept": Stage.sal,
    "qualify": Stage.sql,
    "reject": Stage.recycled,
    "disqualify": Stage.disqualified,
    "opportunity": Stage.opportunity,
    "customer": Stage.customer,
}


class Bant(BaseModel):
    """Budget, authority, need, timeline: what sales learned qualifying the lead."""

    model_config = ConfigDict(extra="forbid")

    budget: str | None = None
    authority: str | None = None
    need: str | None = None
    timeline: str | None = None

    def answered(self) -> dict[str, str]:
        """The fields given (blank answers do not count)."""
        values = {name: getattr(self, name) for name in BANT_FIELDS}
        return {k: v.strip() for k, v in values.items() if v is not None and v.strip()}


class SalesDecision(BaseModel):
    """One decision by sales (or a CRM) about one lead."""

    model_config = ConfigDict(extra="forbid")

    decision: Decision
    reason_code: str = Field(default="", max_length=64)
    note: str = Field(default="", max_length=2000)
    bant: Bant = Field(default_factory=Bant)
    actor: str = Field(default="", max_length=200)

    @property
    def target(self) -> Stage:
        return TARGETS[self.decision]


def problems(spec: LifecycleSpec, decision: SalesDecision) -> list[tuple[str, str]]:
    """(field, message) for everything the decision lacks; empty when it can be applied."""
    found: list[tuple[str, str]] = []
    if decision.decision == "qualify":
        answered = decision.bant.answered()
        missing = [name for name in spec.sales.qualify_requires if name not in answered]
        if missing:
            found.append(("bant", f"qualify needs BANT answers for {', '.join(missing)}"))
    if decision.decision == "reject":
        known = ", ".join(sorted(spec.sales.reject_reasons))
        if not decision.reason_code:
            found.append(("reason_code", f"reject needs a reason code ({known})"))
        elif spec.reject_reason(decision.reason_code) is None:
            found.append(
                ("reason_code", f"unknown reject reason {decision.reason_code!r} ({known})")
            )
    return found
