"""The frequency cap: at most N marketing emails per lead per period, across all sequences."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True)
class FrequencyCap:
    """At most ``max_messages`` emails to one lead in any trailing ``period``."""

    max_messages: int
    period: timedelta

    def __post_init__(self) -> None:
        if self.max_messages < 1:
            raise ValueError(f"frequency cap max_messages must be at least 1, got {self}")
        if self.period <= timedelta(0):
            raise ValueError(f"frequency cap period must be positive, got {self}")


def cap_release(sent_at: Sequence[datetime], now: datetime, cap: FrequencyCap) -> datetime | None:
    """None if one more email may go out at ``now``; else the first instant it may, in UTC.

    A send counts while it is younger than ``period``: one sent at ``t`` stops counting at
    exactly ``t + period``. Sends after ``now`` count too, so clock skew between workers
    cannot let a burst through. Once released, a lead stays released for any later time
    (later instants see a subset of the same sends).
    """
    moment = _utc(now, "now")
    horizon = moment - cap.period
    counted = sorted(t for t in (_utc(s, "sent_at") for s in sent_at) if t > horizon)
    excess = len(counted) - cap.max_messages
    if excess < 0:
        return None
    # When the (excess + 1) oldest sends have aged out, max_messages - 1 remain.
    return counted[excess] + cap.period


def _utc(value: datetime, name: str) -> datetime:
    # Same-zone datetimes compare by wall time and ignore fold; UTC ones compare as instants.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)
