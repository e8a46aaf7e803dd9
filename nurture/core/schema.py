"""Building blocks shared by every YAML schema (sequences, scoring, lifecycle)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer

from nurture.core.durations import Duration, parse_duration


class Strict(BaseModel):
    """A YAML block: unknown fields are errors, values are frozen, aliases accepted."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _duration(value: Any) -> Duration:
    return value if isinstance(value, Duration) else parse_duration(value)


# Written and stored as text ("3d", "2 business days"); a Duration in code.
DurationText = Annotated[
    Duration, BeforeValidator(_duration), PlainSerializer(str, return_type=str)
]
