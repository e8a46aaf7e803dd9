"""Business days with public holidays, per country (pure; the ``holidays`` package knows
the calendars). SLAs count these: an MQL due in 1 business day on a Friday is due Monday at
the same local time, or Tuesday when Monday is a public holiday where the lead is."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

from nurture.sequences.timing import localize

# A run of days off longer than this is a broken calendar, not a holiday season.
MAX_DAYS_OFF_IN_A_ROW = 30


@lru_cache(maxsize=64)
def _country_calendar(country: str) -> holidays.HolidayBase | None:
    try:
        return holidays.country_holidays(country)
    except NotImplementedError:  # no calendar for this code: weekends only
        return None


def supports(country: str) -> bool:
    """True if there is a holiday calendar for ``country`` (ISO 3166 alpha-2)."""
    return bool(country) and _country_calendar(country.upper()) is not None


@dataclass(frozen=True)
class BusinessCalendar:
    """Monday to Friday, less the public holidays of ``country`` and any ``extra`` days."""

    country: str = ""
    extra: frozenset[date] = field(default_factory=frozenset)

    @classmethod
    def of(cls, country: str, extra: Iterable[str | date] = ()) -> BusinessCalendar:
        days = frozenset(d if isinstance(d, date) else date.fromisoformat(d) for d in extra)
        return cls(country.strip().upper(), days)

    def holiday(self, day: date) -> str:
        """The name of the holiday on ``day`` ("" when it is none)."""
        if day in self.extra:
            return "company holiday"
        calendar = _country_calendar(self.country) if self.country else None
        return str(calendar.get(day) or "") if calendar is not None else ""

    def is_business_day(self, day: date) -> bool:
        return day.weekday() < 5 and not self.holiday(day)

    def next_business_day(self, day: date) -> date:
        """The first business day after ``day``."""
        for _ in range(MAX_DAYS_OFF_IN_A_ROW):
            day += timedelta(days=1)
            if self.is_business_day(day):
                return day
        raise ValueError(f"no business day in the {MAX_DAYS_OFF_IN_A_ROW} days after {day}")

    def add_business_days(self, start: datetime, days: int, zone: ZoneInfo) -> datetime:
        """``start`` plus ``days`` business days at the same local time, in UTC.

        Each business day moves to the next business date in ``zone`` (as
        :func:`nurture.sequences.timing.add_wait` does for weekends): Friday 10:00 + 1 is
        Monday 10:00, or Tuesday 10:00 when Monday is a holiday."""
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        local = start.astimezone(zone)
        day = local.date()
        for _ in range(days):
            day = self.next_business_day(day)
        return localize(datetime.combine(day, local.time()), zone).astimezone(UTC)

    def days_off_between(self, start: datetime, end: datetime, zone: ZoneInfo) -> list[str]:
        """Weekend days and holidays strictly between two instants, for explaining a due date."""
        first, last = start.astimezone(zone).date(), end.astimezone(zone).date()
        found = []
        day = first + timedelta(days=1)
        while day < last:
            name = self.holiday(day) or ("weekend" if day.weekday() >= 5 else "")
            if name:
                found.append(f"{day.isoformat()} {name}")
            day += timedelta(days=1)
        return found
