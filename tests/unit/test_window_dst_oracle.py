"""Send windows on DST days against a brute-force oracle, in every zone of the tz database.

The rule: an instant is inside a window when the lead's wall clock then shows an allowed
weekday and a time in [start, end). The oracle reads the wall clock minute by minute (every
offset and transition of 2026-2027 falls on a whole UTC minute, so minutes are exact) and
is compared with ``next_window_opening`` and ``in_window`` from starts every 15 minutes,
from the day before each transition through the day after. Zones whose transition is the
same instant with the same offsets are tested once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, available_timezones

import pytest

from nurture.sequences.engine import Context, Defer, Position, SendEmail, decide
from nurture.sequences.spec import WEEKDAYS, SendWindow, SequenceSpec
from nurture.sequences.timing import in_window, next_window_opening

NEW_YORK = ZoneInfo("America/New_York")
TROLL = ZoneInfo("Antarctica/Troll")  # +00 in winter, +02 in summer
SCAN_FROM = datetime(2025, 12, 30, tzinfo=UTC)
SCAN_TO = datetime(2028, 1, 3, tzinfo=UTC)
SCAN_STEP = 6 * 3600  # no zone changes its offset twice within six hours
START_STEP = timedelta(minutes=15)
# The oracle looks this far past the last start: a window on one weekday reopens a week on.
LOOK_AHEAD = timedelta(days=9)
DAY = 24 * 60
# Around the transitions most zones use (01:00-03:00), as the brief for the rule lists them.
FIXED_HOURS = [
    (30, 90),
    (60, 90),
    (90, 120),
    (60, 120),
    (0, 60),
    (120, 180),
    (119, 121),
    (0, DAY),
]


@dataclass(frozen=True)
class Transition:
    zone: ZoneInfo
    at: datetime  # UTC
    before: timedelta
    after: timedelta

    @property
    def kind(self) -> str:
        return "fall-back" if self.after < self.before else "spring-forward"

    def __str__(self) -> str:
        local = self.at.astimezone(self.zone)
        return f"{self.zone.key}-{local:%Y-%m-%d}-{self.kind}"


def _offset(ts: int, zone: ZoneInfo) -> timedelta:
    offset = datetime.fromtimestamp(ts, zone).utcoffset()
    assert offset is not None
    return offset


def _transitions_of(zone: ZoneInfo) -> Iterator[Transition]:
    ts, last = int(SCAN_FROM.timestamp()), int(SCAN_TO.timestamp())
    offset = _offset(ts, zone)
    while ts < last:
        following = _offset(ts + SCAN_STEP, zone)
        if following != offset:
            yield Transition(zone, _first_second_after(ts, offset, zone), offset, following)
        ts, offset = ts + SCAN_STEP, following


def _first_second_after(ts: int, offset: timedelta, zone: ZoneInfo) -> datetime:
    """The first second after ``ts`` (at ``offset``) with another offset, by bisection."""
    before, after = ts, ts + SCAN_STEP
    while after - before > 1:
        middle = (before + after) // 2
        if _offset(middle, zone) == offset:
            before = middle
        else:
            after = middle
    return datetime.fromtimestamp(after, UTC)


@lru_cache(maxsize=1)
def all_transitions() -> list[Transition]:
    """Every offset change of 2026-2027 (by local date), one zone per distinct change."""
    seen: dict[tuple[datetime, timedelta, timedelta], Transition] = {}
    for name in sorted(available_timezones()):
        for change in _transitions_of(ZoneInfo(name)):
            if change.at.astimezone(change.zone).year in (2026, 2027):
                seen.setdefault((change.at, change.before, change.after), change)
    return sorted(seen.values(), key=lambda t: (t.at, t.zone.key))


def _hours(start: int, end: int) -> str:
    return f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"


def _clamped(start: int, end: int) -> list[tuple[int, int]]:
    """Minutes of the day [start, end), split at midnight (windows never wrap)."""
    first = start % DAY
    last = first + (end - start)
    return [(first, min(DAY, last))] + ([(0, last - DAY)] if last > DAY else [])


def windows_for(change: Transition) -> list[SendWindow]:
    """The fixed windows, windows around this transition's wall times, and one on its
    weekday only (so that a closed day sends the search a week on)."""
    local_before = change.at + change.before
    local_after = change.at + change.after
    low = min(local_before, local_after)
    a = low.hour * 60 + low.minute
    b = a + abs(change.before - change.after) // timedelta(minutes=1)
    half = a + (b - a) // 2
    around = [
        (a - 30, a + 30),
        (a, b),
        (a, half),
        (half, b),
        (b - 30, b + 30),
        (a - 60, b + 60),
        (b, b + 60),
        (a - 1, a + 1),
        (b - 1, b + 1),
    ]
    every_day = list(WEEKDAYS)
    hours = sorted({p for s, e in FIXED_HOURS + around for p in _clamped(s, e)})
    windows = [SendWindow(hours=_hours(s, e), days=every_day) for s, e in hours]
    weekday = WEEKDAYS[low.weekday()]
    windows += [SendWindow(hours=_hours(s, e), days=[weekday]) for s, e in _clamped(a, b)]
    return windows


class Oracle:
    """The wall clock, minute by minute, over a stretch of UTC minutes."""

    def __init__(self, zone: ZoneInfo, first: datetime, minutes: int) -> None:
        self.first = first
        walls = [(first + timedelta(minutes=m)).astimezone(zone) for m in range(minutes)]
        self.clock = [w.hour * 60 + w.minute for w in walls]
        self.weekday = [w.weekday() for w in walls]

    def inside(self, window: SendWindow) -> list[bool]:
        start = window.start.hour * 60 + window.start.minute
        end = DAY if window.end.second else window.end.hour * 60 + window.end.minute
        days = window.weekdays
        return [
            d in days and start <= c < end for c, d in zip(self.clock, self.weekday, strict=True)
        ]

    @staticmethod
    def next_inside(inside: list[bool]) -> list[int | None]:
        """For each minute, the first minute at or after it that is inside."""
        following: list[int | None] = [None] * len(inside)
        upcoming: int | None = None
        for m in range(len(inside) - 1, -1, -1):
            if inside[m]:
                upcoming = m
            following[m] = upcoming
        return following


def _starts(change: Transition) -> list[datetime]:
    local_day = change.at.astimezone(change.zone).date()
    first = _midnight(local_day - timedelta(days=1), change.zone)
    last = _midnight(local_day + timedelta(days=2), change.zone)
    count = (last - first) // START_STEP
    # Half the starts fall mid-minute: the opening is then the start itself, or a whole minute.
    return [first + n * START_STEP + timedelta(seconds=37 * (n % 2)) for n in range(count)]


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def _mismatches(change: Transition) -> Iterator[str]:
    starts = _starts(change)
    first = starts[0]
    minutes = int((starts[-1] + LOOK_AHEAD - first) / timedelta(minutes=1))
    oracle = Oracle(change.zone, first, minutes)
    for window in windows_for(change):
        inside = oracle.inside(window)
        following = oracle.next_inside(inside)
        for at in starts:
            minute = int((at - first) / timedelta(minutes=1))
            nxt = minute if inside[minute] else following[minute + 1]
            assert nxt is not None, f"{window.hours} never opens after {at}"
            expected = at if inside[minute] else first + timedelta(minutes=nxt)
            got = next_window_opening(at, window, change.zone)
            if got != expected or in_window(at, window, change.zone) != inside[minute]:
                yield _describe(change, window, at, got, expected)


def _describe(
    change: Transition, window: SendWindow, at: datetime, got: datetime, expected: datetime
) -> str:
    def wall(t: datetime) -> str:
        return t.astimezone(change.zone).strftime("%a %H:%M:%S%z")

    return (
        f"{change} window {window.days[0] if len(window.days) == 1 else 'daily'} "
        f"{window.hours}: from {wall(at)} got {wall(got)}, expected {wall(expected)}"
    )


def _check(change: Transition) -> None:
    problems = list(_mismatches(change))
    assert not problems, f"{len(problems)} mismatches, e.g.\n" + "\n".join(problems[:10])


FALL_BACKS = [t for t in all_transitions() if t.kind == "fall-back"]
SPRING_FORWARDS = [t for t in all_transitions() if t.kind == "spring-forward"]


def test_the_scan_finds_every_kind_of_change() -> None:
    shifts = {abs(t.before - t.after) for t in all_transitions()}
    # Lord Howe moves 30 minutes, most zones an hour, Troll two hours (+00 <-> +02).
    assert shifts == {timedelta(minutes=30), timedelta(hours=1), timedelta(hours=2)}
    assert len(FALL_BACKS) >= 40 and len(SPRING_FORWARDS) >= 40


@pytest.mark.parametrize("change", FALL_BACKS, ids=str)
def test_fall_back_day_openings_match_the_wall_clock(change: Transition) -> None:
    _check(change)


@pytest.mark.parametrize("change", SPRING_FORWARDS, ids=str)
def test_spring_forward_day_openings_match_the_wall_clock(change: Transition) -> None:
    _check(change)


# --- the examples of docs/engine.md ------------------------------------------------------


def daily(hours: str) -> SendWindow:
    return SendWindow(hours=hours, days=list(WEEKDAYS))


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_new_york_01_30_window_opens_at_01_30_edt_and_again_at_01_30_est() -> None:
    # 2026-11-01: 01:00-01:59 EDT (05:00-05:59 UTC), then 01:00-01:59 EST (06:00-06:59 UTC).
    late = daily("01:30-02:00")
    assert next_window_opening(utc(2026, 11, 1, 4, 0), late, NEW_YORK) == utc(2026, 11, 1, 5, 30)
    # 01:00 EST shows a time before 01:30: not inside (it used to be, "until 02:00").
    assert not in_window(utc(2026, 11, 1, 6, 0), late, NEW_YORK)
    assert next_window_opening(utc(2026, 11, 1, 6, 0), late, NEW_YORK) == utc(2026, 11, 1, 6, 30)
    assert in_window(utc(2026, 11, 1, 6, 45), late, NEW_YORK)
    assert not in_window(utc(2026, 11, 1, 7, 0), late, NEW_YORK)  # 02:00 EST


def test_new_york_01_00_to_01_30_is_open_in_the_repeated_hour_too() -> None:
    early = daily("01:00-01:30")
    assert in_window(utc(2026, 11, 1, 5, 20), early, NEW_YORK)  # 01:20 EDT
    assert in_window(utc(2026, 11, 1, 6, 20), early, NEW_YORK)  # 01:20 EST
    # At 01:40 EDT the window reopens in 20 minutes (01:00 EST), not the next day.
    assert next_window_opening(utc(2026, 11, 1, 5, 40), early, NEW_YORK) == utc(2026, 11, 1, 6, 0)


def test_troll_two_hour_fall_back_repeats_01_00_to_03_00() -> None:
    # 2026-10-25 01:00 UTC: 03:00 +02 becomes 01:00 +00.
    first_hour = daily("01:00-02:00")
    assert next_window_opening(utc(2026, 10, 25, 0, 30), first_hour, TROLL) == utc(2026, 10, 25, 1)
    second_hour = daily("02:00-03:00")
    assert next_window_opening(utc(2026, 10, 25, 1, 0), second_hour, TROLL) == utc(2026, 10, 25, 2)


def test_troll_window_inside_the_two_hour_gap_is_closed_that_day() -> None:
    # 2026-03-29 01:00 UTC: 01:00 +00 becomes 03:00 +02; 01:30-02:30 never shows.
    lost = daily("01:30-02:30")
    opens = next_window_opening(utc(2026, 3, 29, 0, 0), lost, TROLL)
    assert opens == utc(2026, 3, 29, 23, 30)  # 01:30 +02 on the 30th


def test_the_engine_defers_a_send_that_the_old_rule_let_out_at_01_00_est() -> None:
    spec = SequenceSpec.model_validate(
        {
            "key": "night",
            "name": "night",
            "audience": {"personas": ["x"], "journey_stages": ["awareness"]},
            "send_window": {"days": ["sun"], "hours": "01:30-02:00"},
            "steps": [{"id": "hello", "email": {"template": "t", "subject": "s"}}],
        }
    )
    lead = {"timezone": "America/New_York", "lifecycle_stage": "lead"}
    now = utc(2026, 11, 1, 6, 0)  # 01:00 EST
    decision = decide(spec, Position("hello", now), Context(lead=lead), now)
    assert decision == Defer("hello", utc(2026, 11, 1, 6, 30), "window")  # 01:30 EST
    later = decide(spec, Position("hello", now), Context(lead=lead), decision.run_at)
    assert isinstance(later, SendEmail)
