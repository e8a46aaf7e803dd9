"""When a step may go out: waits, send windows and time zones (pure; ``now`` is always passed in).

Every function returns aware datetimes in UTC. Arithmetic is done in UTC because Python
compares and subtracts two datetimes that share a ``tzinfo`` by wall time, ignoring DST.

Local-time rules, used throughout:

* A local time that does not exist (the spring-forward gap) means the first valid instant
  after the gap: 02:30 on 2026-03-08 in New York is 03:00 EDT.
* A local time that happens twice (the fall-back hour) means its first occurrence (fold=0):
  01:30 on 2026-11-01 in New York is 01:30 EDT.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nurture.authoring.schema import SendWindow
from nurture.core.durations import Duration

# Every window allows at least one weekday, so eight days always reach an opening; the
# second week matters only when that day's window falls wholly inside a DST gap.
SEARCH_DAYS = 15
# SendWindow encodes an end of "24:00" as 23:59:59; we read it back as the next midnight.
_END_OF_DAY = time(23, 59, 59)
_FALLBACK_ZONE = "UTC"


def is_valid_timezone(name: str) -> bool:
    """True if ``name`` is an IANA time zone this machine knows (``Europe/Berlin``, ``UTC``)."""
    if not isinstance(name, str) or not name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


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
    offset_after = datetime.fromtimestamp(after, zone).utcoffset()
    while after - before > 1:
        middle = (before + after) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == offset_after:
            after = middle
        else:
            before = middle
    return datetime.fromtimestamp(after, zone)


def add_wait(start: datetime, wait: Duration, zone: ZoneInfo) -> datetime:
    """When a wait that begins at ``start`` ends, in UTC.

    Calendar waits (``12h``, ``3d``) are real elapsed time: ``24h`` across a DST change is
    24 hours, so the local clock reads one hour more or less.

    Business days (``2 business days``) count Monday to Friday in ``zone`` and keep the local
    wall-clock time. Each business day moves to the next weekday date, so a weekend start
    lands on Monday for the first one, as HubSpot defers a weekend action "to the same time
    on Monday": Friday 10:00 + 1 = Monday 10:00, Saturday 10:00 + 1 = Monday 10:00,
    Saturday 10:00 + 2 = Tuesday 10:00 ("1 business day" reads as "the next business day").
    A resulting local time in a DST gap moves to the first valid instant after it.
    """
    _require_aware(start, "start")
    _require_room(start, wait)
    if not wait.is_business:
        return start.astimezone(UTC) + wait.span
    local = start.astimezone(zone)
    day = local.date()
    for _ in range(wait.business_days):
        day = _next_weekday(day)
    return localize(datetime.combine(day, local.time()), zone).astimezone(UTC)


def _next_weekday(day: date) -> date:
    day += timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


def window_bounds(day: date, window: SendWindow, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The real interval [open, close) of ``window`` on local date ``day``, in UTC.

    It runs from the instant the local clock first shows ``start`` to the instant it first
    shows ``end``, so on a fall-back day a window 01:00-02:00 covers both 01:xx hours and a
    window 00:30-01:30 only the first. The interval is empty when the whole window lies in
    a DST gap. Weekdays are not checked here.
    """
    opening = localize(datetime.combine(day, window.start), zone)
    if window.end == _END_OF_DAY:
        closing = localize(datetime.combine(day + timedelta(days=1), time(0)), zone)
    else:
        closing = localize(datetime.combine(day, window.end), zone)
    return opening.astimezone(UTC), closing.astimezone(UTC)


def in_window(at: datetime, window: SendWindow | None, zone: ZoneInfo) -> bool:
    """True if mail may go out at ``at`` (always, without a window)."""
    _require_aware(at, "at")
    if window is None:
        return True
    moment = at.astimezone(UTC)
    # The previous local date too: a gap across midnight can push its window past midnight.
    local_day = at.astimezone(zone).date()
    for day in (local_day - timedelta(days=1), local_day):
        if day.weekday() in window.weekdays:
            opening, closing = window_bounds(day, window, zone)
            if opening <= moment < closing:
                return True
    return False


def next_window_opening(at: datetime, window: SendWindow | None, zone: ZoneInfo) -> datetime:
    """The first instant at or after ``at`` inside the send window, in UTC."""
    _require_aware(at, "at")
    moment = at.astimezone(UTC)
    if window is None or in_window(moment, window, zone):
        return moment
    first_day = moment.astimezone(zone).date()
    for offset in range(-1, SEARCH_DAYS):
        day = first_day + timedelta(days=offset)
        if day.weekday() not in window.weekdays:
            continue
        opening, closing = window_bounds(day, window, zone)
        if moment <= opening < closing:
            return opening
    raise ValueError(
        f"send window {window.days} {window.hours} never opens in {zone.key} "
        f"within {SEARCH_DAYS} days of {moment.isoformat()}"
    )


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")


def _require_room(start: datetime, wait: Duration) -> None:
    """A wait that would end near the end of datetime (the year 9999) is a ValueError that
    says so, not an OverflowError from the arithmetic after it."""
    # Business days: weekends and holidays at most double them; then the send-window search.
    needed = wait.span + timedelta(days=2 * wait.business_days + SEARCH_DAYS + 1)
    if datetime.max.replace(tzinfo=UTC) - start < needed:
        raise ValueError(f"a wait of {wait} from {start.isoformat()} ends after the year 9999")


def retry_backoff(attempts: int) -> timedelta:
    """1, 2, 4, 8 ... minutes after each failed attempt, at most an hour."""
    # The same for mail and webhooks: a greylisting server asks again within the hour.
    return timedelta(minutes=min(60, 2 ** max(0, attempts - 1)))
