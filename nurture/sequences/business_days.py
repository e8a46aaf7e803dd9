"""Business days: the working weekdays less the public holidays of a country (the
``holidays`` package knows the calendars) and any company days off. Pure.

One calendar for everything that counts business days: "2 business days" waits in
sequences (:func:`nurture.sequences.timing.add_wait`) and hand-off SLAs
(:mod:`nurture.funnel.sla`). A Korean lead's wait from Wednesday 23 September 2026 skips
Chuseok (Thursday to Saturday) as its SLA does."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

from nurture.sequences.timing import add_business_days, next_business_day

MONDAY_TO_FRIDAY = frozenset(range(5))


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
    """The ``weekdays`` (Monday to Friday unless told; Monday is 0), less the public
    holidays of ``country`` and any ``extra`` days. An unknown or empty country has no
    public holidays."""

    country: str = ""
    extra: frozenset[date] = field(default_factory=frozenset)
    weekdays: frozenset[int] = MONDAY_TO_FRIDAY

    @classmethod
    def of(
        cls,
        country: str,
        extra: Iterable[str | date] = (),
        weekdays: Iterable[int] = MONDAY_TO_FRIDAY,
    ) -> BusinessCalendar:
        days = frozenset(d if isinstance(d, date) else date.fromisoformat(d) for d in extra)
        return cls(country.strip().upper(), days, frozenset(weekdays))

    def holiday(self, day: date) -> str:
        """The name of the holiday on ``day`` ("" when it is none)."""
        if day in self.extra:
            return "company holiday"
        calendar = _country_calendar(self.country) if self.country else None
        return str(calendar.get(day) or "") if calendar is not None else ""

    def is_business_day(self, day: date) -> bool:
        return day.weekday() in self.weekdays and not self.holiday(day)

    def next_business_day(self, day: date) -> date:
        """The first business day after ``day``."""
        return next_business_day(day, self.is_business_day)

    def add_business_days(self, start: datetime, days: int, zone: ZoneInfo) -> datetime:
        """``start`` plus ``days`` business days at the same local time, in UTC.

        Each business day moves to the next business date in ``zone`` (as
        :func:`nurture.sequences.timing.add_wait` does): Friday 10:00 + 1 is Monday 10:00, or
        Tuesday 10:00 when Monday is a holiday."""
        return add_business_days(start, days, zone, self.is_business_day)

    def days_off_between(self, start: datetime, end: datetime, zone: ZoneInfo) -> list[str]:
        """Days off (weekend days and holidays) strictly between two instants, for
        explaining a due date."""
        first, last = start.astimezone(zone).date(), end.astimezone(zone).date()
        found = []
        day = first + timedelta(days=1)
        while day < last:
            name = self.holiday(day) or ("weekend" if day.weekday() not in self.weekdays else "")
            if name:
                found.append(f"{day.isoformat()} {name}")
            day += timedelta(days=1)
        return found
