"""Durations as marketers write them: ``3d``, ``12h``, ``90m``, ``1w``, ``2 business days``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

_UNITS = {
    "m": "minutes",
    "min": "minutes",
    "mins": "minutes",
    "minute": "minutes",
    "minutes": "minutes",
    "h": "hours",
    "hr": "hours",
    "hrs": "hours",
    "hour": "hours",
    "hours": "hours",
    "d": "days",
    "day": "days",
    "days": "days",
    "w": "weeks",
    "week": "weeks",
    "weeks": "weeks",
}
_PATTERN = re.compile(r"^\s*(\d+)\s*([a-z]+)\s*$")
_BUSINESS = re.compile(r"^\s*(\d+)\s*business\s*days?\s*$")
_SECONDS = {"minutes": 60, "hours": 3600, "days": 86400, "weeks": 604800}
# The longest calendar wait: longer is a typo, and the engine's date arithmetic (now + wait,
# then the send window) must stay far from the year 9999, where Python's datetime ends.
MAX_WAIT = timedelta(days=3650)
# The most business days one wait may count (about four years of weekdays): add_wait steps
# through them one by one.
MAX_BUSINESS_DAYS = 1000


@dataclass(frozen=True)
class Duration:
    """A calendar span, or a count of business days (Monday to Friday in the lead's zone)."""

    span: timedelta = timedelta(0)
    business_days: int = 0

    @property
    def is_business(self) -> bool:
        return self.business_days > 0

    def __str__(self) -> str:
        """The canonical text, parseable again: ``2 business days``, ``3d``, ``12h``, ``90m``."""
        if self.is_business:
            return f"{self.business_days} business day{'s' if self.business_days != 1 else ''}"
        seconds = int(self.span.total_seconds())
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds % size == 0:
                return f"{seconds // size}{unit}"
        return f"{seconds // 60}m"


def parse_duration(text: str | int) -> Duration:
    """Parse a duration; raise ValueError with a message a marketer can act on."""
    raw = str(text).strip().lower()
    business = _BUSINESS.match(raw)
    if business:
        count = _count(business.group(1))
        if count == 0:
            raise ValueError(f"bad duration {text!r}: business days must be at least 1")
        if count > MAX_BUSINESS_DAYS:
            raise ValueError(f"bad duration {text!r}: at most {MAX_BUSINESS_DAYS} business days")
        return Duration(business_days=count)
    match = _PATTERN.match(raw)
    if not match or match.group(2) not in _UNITS:
        raise ValueError(
            f"bad duration {text!r}: use a number and a unit, e.g. '3d', '12h', '90m', '1w' "
            "or '2 business days'"
        )
    unit = _UNITS[match.group(2)]
    count = _count(match.group(1))
    if count * _SECONDS[unit] > MAX_WAIT.total_seconds():  # checked before timedelta overflows
        raise ValueError(f"bad duration {text!r}: at most {MAX_WAIT.days}d (about ten years)")
    return Duration(span=timedelta(**{unit: count}))


def _count(digits: str) -> int:
    """The number written; one of more than 12 digits is over every limit anyway (and
    int() refuses 4,300)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 12 else 10**12
