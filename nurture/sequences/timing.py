"""When a step may go out: waits, send windows and time zones (pure; ``now`` is always passed in).

Every function returns aware datetimes in UTC. Arithmetic is done in UTC because Python
compares and subtracts two datetimes that share a ``tzinfo`` by wall time, ignoring DST.

Send windows follow the wall clock: an instant is inside a window when the clock in the
window's zone then shows an allowed weekday and a time in [start, end) ("24:00" is the end
of the day), whichever of a repeated hour it is. So on DST days:

* A fall-back day shows an hour twice, and a window in it is open twice. In New York on
  2026-11-01 the clock shows 01:00-01:59 as EDT, then again as EST: a 01:30-02:00 window
  opens at 01:30 EDT and again at 01:30 EST; at 01:20 EST a 01:00-01:30 window is open; a
  00:30-01:30 window is open 00:30-01:30 EDT and again 01:00-01:30 EST.
* A spring-forward day skips an hour: on 2026-03-08 in New York a 02:30-05:00 window opens
  at 03:00 EDT (the clock never shows 02:30), and a 02:00-02:30 window stays closed.

Local times as points in time (what a business-day wait lands on), used throughout:

* A local time that does not exist (the spring-forward gap) means the first valid instant
  after the gap: 02:30 on 2026-03-08 in New York is 03:00 EDT.
* A local time that happens twice (the fall-back hour) means its first occurrence (fold=0):
  01:30 on 2026-11-01 in New York is 01:30 EDT.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo

from nurture.core.durations import Duration
from nurture.core.zones import is_valid_timezone
from nurture.sequences.spec import SendWindow

# Every window allows at least one weekday, so eight days always reach an opening; the
# second week matters only when that day's window falls wholly inside a DST gap.
SEARCH_DAYS = 15
# A run of days off longer than this is a broken calendar, not a holiday season.
MAX_DAYS_OFF_IN_A_ROW = 30
# SendWindow encodes an end of "24:00" as 23:59:59; we read it back as the next midnight.
_END_OF_DAY = time(23, 59, 59)
_FALLBACK_ZONE = "UTC"
_EPOCH = datetime(1970, 1, 1)
_SECOND = timedelta(seconds=1)

# A stretch of real time [start, end), in UTC.
Interval = tuple[datetime, datetime]


def resolve_zone(
    lead_timezone: str | None, window: SendWindow | None, default_timezone: str
) -> ZoneInfo:
    """The zone a lead's schedule runs in; never raises.

    Order: the window's fixed zone (unless it is ``"lead"``), then the lead's own zone, then
    ``default_timezone``, then UTC. An invalid name is skipped: zones are validated on import
    and load, so one that slips through should not stop the lead's sequence.
    """
    names = [window.timezone] if window is not None and window.timezone != "lead" else []
    names += [lead_timezone or "", default_timezone]
    for name in names:
        if is_valid_timezone(name.strip()):
            return ZoneInfo(name.strip())
    return ZoneInfo(_FALLBACK_ZONE)


def localize(naive: datetime, zone: ZoneInfo) -> datetime:
    """The instant a local wall time means in ``zone`` (first occurrence; after a gap)."""
    wall = naive.replace(tzinfo=None, fold=0)
    first = wall.replace(tzinfo=zone)
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall:
        return first
    return _gap_end(wall, zone)


def _gap_end(wall: datetime, zone: ZoneInfo) -> datetime:
    """The first valid instant after the DST gap that swallows the wall time ``wall``."""
    # Inside a gap, fold=1 reads the wall time with the offset after the transition (an
    # instant before it) and fold=0 with the offset before (an instant after it).
    before = math.floor(wall.replace(tzinfo=zone, fold=1).timestamp())
    after = math.ceil(wall.replace(tzinfo=zone, fold=0).timestamp())
    return datetime.fromtimestamp(_transition(before, after, zone), zone)


def _transition(before: int, after: int, zone: ZoneInfo) -> int:
    """The first second after ``before`` (epoch seconds) at which ``zone`` has the UTC offset
    it has at ``after``; the offsets at the two differ, and change once in between."""
    offset_after = _offset_at(after, zone)
    while after - before > 1:
        middle = (before + after) // 2
        if _offset_at(middle, zone) == offset_after:
            after = middle
        else:
            before = middle
    return after


def _offset_at(second: int, zone: ZoneInfo) -> timedelta | None:
    return datetime.fromtimestamp(second, zone).utcoffset()


def is_weekday(day: date) -> bool:
    """Monday to Friday: the business days of a lead without a holiday calendar."""
    return day.weekday() < 5


def add_wait(
    start: datetime,
    wait: Duration,
    zone: ZoneInfo,
    is_business_day: Callable[[date], bool] = is_weekday,
) -> datetime:
    """When a wait that begins at ``start`` ends, in UTC.

    Calendar waits (``12h``, ``3d``) are real elapsed time: ``24h`` across a DST change is
    24 hours, so the local clock reads one hour more or less.

    Business days (``2 business days``) count the dates in ``zone`` that ``is_business_day``
    accepts (Monday to Friday unless told; the engine passes the lead's holiday calendar,
    see :mod:`nurture.sequences.business_days`) and keep the local wall-clock time. Each business
    day moves to the next business date, so a weekend start lands on Monday for the first
    one, as HubSpot defers a weekend action "to the same time on Monday": Friday 10:00 + 1 =
    Monday 10:00 (Tuesday when Monday is a holiday), Saturday 10:00 + 1 = Monday 10:00,
    Saturday 10:00 + 2 = Tuesday 10:00 ("1 business day" reads as "the next business day").
    A resulting local time in a DST gap moves to the first valid instant after it.
    """
    _require_aware(start, "start")
    _require_room(start, wait)
    if not wait.is_business:
        return start.astimezone(UTC) + wait.span
    return add_business_days(start, wait.business_days, zone, is_business_day)


def add_business_days(
    start: datetime, days: int, zone: ZoneInfo, is_business_day: Callable[[date], bool]
) -> datetime:
    """``start`` plus ``days`` business days at the same local time in ``zone``, in UTC."""
    _require_aware(start, "start")
    local = start.astimezone(zone)
    day = local.date()
    try:
        for _ in range(days):
            day = next_business_day(day, is_business_day)
        return localize(datetime.combine(day, local.time()), zone).astimezone(UTC)
    except OverflowError:
        raise ValueError(
            f"{days} business days from {start.isoformat()} end after the year 9999"
        ) from None


def next_business_day(day: date, is_business_day: Callable[[date], bool]) -> date:
    """The first date after ``day`` that ``is_business_day`` accepts."""
    for _ in range(MAX_DAYS_OFF_IN_A_ROW):
        day += timedelta(days=1)
        if is_business_day(day):
            return day
    raise ValueError(f"no business day in the {MAX_DAYS_OFF_IN_A_ROW} days after {day}")


class _Hours(NamedTuple):
    """A window's days and hours, read once per call (SendWindow parses them on each read)."""

    weekdays: frozenset[int]
    start: time
    end: time

    @classmethod
    def of(cls, window: SendWindow) -> _Hours:
        return cls(window.weekdays, window.start, window.end)

    def shows(self, wall: datetime) -> bool:
        """True if the wall-clock reading ``wall`` is one of these days and hours."""
        clock = wall.time()
        if wall.weekday() not in self.weekdays or clock < self.start:
            return False
        return self.end == _END_OF_DAY or clock < self.end


def in_window(at: datetime, window: SendWindow | None, zone: ZoneInfo) -> bool:
    """True if mail may go out at ``at`` (always, without a window): the wall clock in
    ``zone`` then shows one of the window's days and a time in its hours."""
    _require_aware(at, "at")
    return window is None or _Hours.of(window).shows(at.astimezone(zone))


def next_window_opening(at: datetime, window: SendWindow | None, zone: ZoneInfo) -> datetime:
    """The earliest instant at or after ``at`` inside the send window, in UTC: ``at`` itself
    (to the microsecond) when it is inside, else where the next stretch of it begins."""
    _require_aware(at, "at")
    moment = at.astimezone(UTC)
    if window is None:
        return moment
    hours = _Hours.of(window)
    if hours.shows(moment.astimezone(zone)):
        return moment
    # From the day before: after a fall-back at midnight, later instants show an earlier date.
    first_day = moment.astimezone(zone).date() - timedelta(days=1)
    found: datetime | None = None
    for offset in range(SEARCH_DAYS + 2):
        opening = _opening_on(first_day + timedelta(days=offset), hours, zone, moment)
        if found is not None:
            # Only the next date's stretches can come before those of the date found.
            return found if opening is None else min(found, opening)
        found = opening
    raise ValueError(
        f"send window {window.days} {window.hours} never opens in {zone.key} "
        f"within {SEARCH_DAYS} days of {moment.isoformat()}"
    )


def _opening_on(day: date, hours: _Hours, zone: ZoneInfo, moment: datetime) -> datetime | None:
    """The earliest instant at or after ``moment`` inside the window on local date ``day``."""
    if day.weekday() not in hours.weekdays:
        return None
    stretches = _intervals(day, hours.start, hours.end, zone)
    return next((max(start, moment) for start, end in stretches if end > moment), None)


def window_intervals(day: date, window: SendWindow, zone: ZoneInfo) -> tuple[Interval, ...]:
    """The stretches of real time, in UTC and in order, when the wall clock in ``zone``
    shows local date ``day`` and a time in the window's hours (weekdays are not checked).

    None when the hours fall wholly in a DST gap; two when a repeated hour ends inside the
    hours (New York, 2026-11-01, 00:30-01:30: 00:30-01:30 EDT and 01:00-01:30 EST); else one.
    """
    return _intervals(day, window.start, window.end, zone)


@lru_cache(maxsize=4096)
def _intervals(day: date, start: time, end: time, zone: ZoneInfo) -> tuple[Interval, ...]:
    first = datetime.combine(day, start)
    next_midnight = datetime.combine(day + timedelta(days=1), time(0))
    last = next_midnight if end == _END_OF_DAY else datetime.combine(day, end)
    # Any offset in force while the clock shows [first, last) is one that first or last
    # reads with (fold=0 or fold=1), given one offset change at most.
    offsets = {_offset_of(wall, fold, zone) for wall in (first, last) for fold in (0, 1)}
    pieces = sorted(
        piece for offset in offsets if (piece := _under_offset(first, last, offset, zone))
    )
    return _joined(pieces)


def _offset_of(wall: datetime, fold: int, zone: ZoneInfo) -> timedelta:
    """The offset of a naive wall time read with ``fold`` (the two differ in a gap or a
    repeated hour: fold=0 reads it before the change, fold=1 after)."""
    return wall.replace(tzinfo=zone, fold=fold).utcoffset() or timedelta(0)  # never None


def _under_offset(
    first: datetime, last: datetime, offset: timedelta, zone: ZoneInfo
) -> tuple[int, int] | None:
    """The epoch seconds [start, end) when ``zone`` is at ``offset`` and its wall clock shows
    a time in [first, last). A zone changes its offset at most once in 24 hours (every zone
    does, in the years tests/test_window_dst_oracle.py checks), so these seconds are all of
    [first, last) read at ``offset``, or the part before or after the change, or none."""
    start = (first - offset - _EPOCH) // _SECOND
    end = (last - offset - _EPOCH) // _SECOND
    starts_at, ends_at = _offset_at(start, zone) == offset, _offset_at(end - 1, zone) == offset
    if starts_at and ends_at:
        return start, end
    if starts_at:
        return start, _transition(start, end - 1, zone)
    if ends_at:
        return _transition(start, end - 1, zone), end
    return None


def _joined(pieces: list[tuple[int, int]]) -> tuple[Interval, ...]:
    """Sorted, disjoint epoch-second stretches as UTC intervals, touching ones joined."""
    joined: list[tuple[int, int]] = []
    for start, end in pieces:
        if joined and joined[-1][1] == start:
            start = joined.pop()[0]
        joined.append((start, end))
    return tuple((_utc(start), _utc(end)) for start, end in joined)


def _utc(second: int) -> datetime:
    return datetime.fromtimestamp(second, UTC)


def _require_room(start: datetime, wait: Duration) -> None:
    """A wait that would end near the end of datetime (the year 9999) is a ValueError that
    says so, not an OverflowError from the arithmetic after it."""
    # Business days: weekends and holidays at most about double them (a calendar that
    # closes more is caught in add_business_days); then the send-window search.
    days = 2 * wait.business_days + SEARCH_DAYS + 1
    if datetime.max.replace(tzinfo=UTC) - start < wait.span + timedelta(days=days):
        raise ValueError(f"a wait of {wait} from {start.isoformat()} ends after the year 9999")


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")


def retry_backoff(attempts: int) -> timedelta:
    """1, 2, 4, 8 ... minutes after each failed attempt, at most an hour."""
    # The same for mail and webhooks: a greylisting server asks again within the hour.
    return timedelta(minutes=min(60, 2 ** max(0, attempts - 1)))
