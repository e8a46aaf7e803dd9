"""Waits, send windows and time zones: when a step may go out (pure, `now` passed in)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from nurture.core.durations import parse_duration
from nurture.core.zones import is_valid_timezone
from nurture.sequences.spec import SendWindow
from nurture.sequences.timing import (
    add_wait,
    in_window,
    localize,
    next_window_opening,
    resolve_zone,
    window_intervals,
)

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
SEOUL = ZoneInfo("Asia/Seoul")
SYDNEY = ZoneInfo("Australia/Sydney")
ZONES = [NEW_YORK, BERLIN, SEOUL, SYDNEY]
OFFICE_HOURS = SendWindow()  # Mon-Fri 09:00-17:00 in the lead's zone
EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def local(
    zone: ZoneInfo,
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    *,
    fold: int = 0,
) -> datetime:
    """An aware local time: ``local(BERLIN, 2026, 6, 9, 12, 0)``."""
    return datetime(year, month, day, hour, minute, second, tzinfo=zone, fold=fold)


def window(hours: str, days: list[str] | None = None, timezone: str = "lead") -> SendWindow:
    return SendWindow(hours=hours, days=days or EVERY_DAY, timezone=timezone)


# --- zones -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["America/New_York", "Europe/Berlin", "Asia/Seoul", "UTC"])
def test_known_zones_are_valid(name: str) -> None:
    assert is_valid_timezone(name)


@pytest.mark.parametrize(
    "name", ["", "lead", "Mars/Olympus_Mons", "America", "/etc/passwd", "../etc/passwd", " UTC"]
)
def test_unknown_zones_are_invalid(name: str) -> None:
    assert not is_valid_timezone(name)


def test_lead_zone_is_used_when_the_window_follows_the_lead() -> None:
    assert resolve_zone("Asia/Seoul", OFFICE_HOURS, "UTC") == SEOUL
    assert resolve_zone("Asia/Seoul", None, "UTC") == SEOUL


def test_fixed_window_zone_wins_over_the_lead_zone() -> None:
    fixed = window("09:00-17:00", timezone="Europe/Berlin")
    assert resolve_zone("Asia/Seoul", fixed, "UTC") == BERLIN


@pytest.mark.parametrize("lead_zone", ["", None, "Not/AZone", "lead"])
def test_missing_or_bad_lead_zone_falls_back_to_the_default(lead_zone: str | None) -> None:
    assert resolve_zone(lead_zone, OFFICE_HOURS, "America/New_York") == NEW_YORK


def test_bad_fixed_zone_falls_back_to_lead_then_default_then_utc() -> None:
    broken = window("09:00-17:00", timezone="Atlantis/Capital")
    assert resolve_zone("Asia/Seoul", broken, "UTC") == SEOUL
    assert resolve_zone("", broken, "Europe/Berlin") == BERLIN
    assert resolve_zone("nope", broken, "also/nope") == ZoneInfo("UTC")


def test_surrounding_spaces_in_a_lead_zone_are_forgiven() -> None:
    assert resolve_zone(" Asia/Seoul ", None, "UTC") == SEOUL


# --- local time construction -------------------------------------------------------------


def test_localize_moves_a_spring_forward_gap_time_to_the_end_of_the_gap() -> None:
    at = localize(datetime(2026, 3, 8, 2, 30), NEW_YORK)
    assert at.astimezone(UTC) == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 03:00 EDT


def test_localize_takes_the_first_of_a_repeated_hour() -> None:
    at = localize(datetime(2026, 11, 1, 1, 30), NEW_YORK)
    assert at.astimezone(UTC) == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT


def test_localize_handles_half_hour_gaps_and_skipped_days() -> None:
    lord_howe = localize(datetime(2026, 10, 4, 2, 15), ZoneInfo("Australia/Lord_Howe"))
    assert (lord_howe.hour, lord_howe.minute) == (2, 30)
    # Samoa skipped 2011-12-30 entirely.
    samoa = localize(datetime(2011, 12, 30, 12, 0), ZoneInfo("Pacific/Apia"))
    assert samoa.replace(tzinfo=None) == datetime(2011, 12, 31, 0, 0)


def test_localize_leaves_ordinary_times_alone() -> None:
    at = localize(datetime(2026, 6, 1, 9, 0), SEOUL)
    assert at.astimezone(UTC) == datetime(2026, 6, 1, 0, 0, tzinfo=UTC)


# --- send windows ------------------------------------------------------------------------


@pytest.mark.parametrize("zone", ZONES, ids=lambda z: z.key)
def test_friday_evening_step_goes_out_monday_morning_local(zone: ZoneInfo) -> None:
    friday_evening = local(zone, 2026, 6, 12, 18, 0)
    opens = next_window_opening(friday_evening, OFFICE_HOURS, zone)
    assert opens.tzinfo is UTC
    assert opens.astimezone(zone).replace(tzinfo=None) == datetime(2026, 6, 15, 9, 0)


@pytest.mark.parametrize("zone", ZONES, ids=lambda z: z.key)
def test_step_due_inside_the_window_goes_at_once(zone: ZoneInfo) -> None:
    tuesday_noon = local(zone, 2026, 6, 9, 12, 34, 56)
    assert in_window(tuesday_noon, OFFICE_HOURS, zone)
    assert next_window_opening(tuesday_noon, OFFICE_HOURS, zone) == tuesday_noon


def test_step_due_before_the_window_waits_for_the_same_morning() -> None:
    early = local(BERLIN, 2026, 6, 9, 6, 15)
    opens = next_window_opening(early, OFFICE_HOURS, BERLIN)
    assert opens == local(BERLIN, 2026, 6, 9, 9, 0)


def test_window_end_is_exclusive_and_start_inclusive() -> None:
    assert in_window(local(SEOUL, 2026, 6, 9, 9, 0), OFFICE_HOURS, SEOUL)
    assert not in_window(local(SEOUL, 2026, 6, 9, 17, 0), OFFICE_HOURS, SEOUL)
    opens = next_window_opening(local(SEOUL, 2026, 6, 9, 17, 0), OFFICE_HOURS, SEOUL)
    assert opens == local(SEOUL, 2026, 6, 10, 9, 0)


def test_window_is_read_in_the_given_zone_not_utc() -> None:
    # 23:00 UTC on a Sunday is 08:00 Monday in Seoul: one hour before the window opens.
    sunday_utc = datetime(2026, 6, 14, 23, 0, tzinfo=UTC)
    opens = next_window_opening(sunday_utc, OFFICE_HOURS, SEOUL)
    assert opens == datetime(2026, 6, 15, 0, 0, tzinfo=UTC)


def test_no_window_means_any_time_returned_in_utc() -> None:
    at = local(SYDNEY, 2026, 6, 13, 3, 0)  # Saturday night
    assert in_window(at, None, SYDNEY)
    opens = next_window_opening(at, None, SYDNEY)
    assert opens == at and opens.tzinfo is UTC


def test_window_ending_at_midnight_includes_the_last_minute() -> None:
    late = window("20:00-24:00", ["wed"])
    assert in_window(local(BERLIN, 2026, 6, 10, 23, 59, 30), late, BERLIN)
    last_instant = datetime(2026, 6, 10, 23, 59, 59, 999_999, tzinfo=BERLIN)
    assert in_window(last_instant, late, BERLIN)
    assert not in_window(local(BERLIN, 2026, 6, 11, 0, 0), late, BERLIN)
    assert next_window_opening(local(BERLIN, 2026, 6, 11, 0, 0), late, BERLIN) == local(
        BERLIN, 2026, 6, 17, 20, 0
    )


def test_spring_forward_window_opening_in_the_gap_opens_when_the_gap_ends() -> None:
    gap_window = window("02:30-05:00")
    opens = next_window_opening(local(NEW_YORK, 2026, 3, 8, 0, 0), gap_window, NEW_YORK)
    assert opens == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    assert opens.astimezone(NEW_YORK).replace(tzinfo=None) == datetime(2026, 3, 8, 3, 0)


def test_spring_forward_in_the_southern_hemisphere() -> None:
    # Sydney jumps from 02:00 to 03:00 on 2026-10-04.
    opens = next_window_opening(local(SYDNEY, 2026, 10, 4, 1, 0), window("02:00-04:00"), SYDNEY)
    assert opens.astimezone(SYDNEY).replace(tzinfo=None) == datetime(2026, 10, 4, 3, 0)
    assert opens.astimezone(SYDNEY).utcoffset() == timedelta(hours=11)


def test_window_wholly_inside_the_gap_skips_to_the_next_allowed_day() -> None:
    lost = window("02:00-02:30", ["sun"])
    opens = next_window_opening(local(NEW_YORK, 2026, 3, 8, 0, 0), lost, NEW_YORK)
    assert opens == local(NEW_YORK, 2026, 3, 15, 2, 0)


def test_fall_back_window_opens_at_the_first_occurrence() -> None:
    repeated = window("01:00-02:00")
    opens = next_window_opening(local(NEW_YORK, 2026, 11, 1, 0, 0), repeated, NEW_YORK)
    assert opens == datetime(2026, 11, 1, 5, 0, tzinfo=UTC)  # 01:00 EDT
    assert opens.astimezone(NEW_YORK).utcoffset() == timedelta(hours=-4)


def test_fall_back_second_occurrence_inside_the_window_goes_at_once() -> None:
    second = local(NEW_YORK, 2026, 11, 1, 1, 30, fold=1)  # 01:30 EST
    assert second.astimezone(UTC) == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
    repeated = window("01:00-02:00")
    assert in_window(second, repeated, NEW_YORK)
    opens = next_window_opening(second, repeated, NEW_YORK)
    # Compared in UTC: Python never finds a fold-dependent local time equal to another zone's.
    assert opens == second.astimezone(UTC)
    assert opens.astimezone(NEW_YORK).fold == 1


def test_fall_back_window_is_open_again_in_the_repeated_hour() -> None:
    # Changed with the wall-clock rule: this test asserted the old rule (open from the clock
    # first showing 00:30 to it first showing 01:30), so 01:15 EST was outside and the
    # window reopened the next day. The clock shows 01:15 then, so it is inside.
    short = window("00:30-01:30")
    intervals = window_intervals(datetime(2026, 11, 1).date(), short, NEW_YORK)
    assert sum((end - start for start, end in intervals), timedelta()) == timedelta(hours=1.5)
    second = local(NEW_YORK, 2026, 11, 1, 1, 15, fold=1)
    assert in_window(second, short, NEW_YORK)
    assert next_window_opening(second, short, NEW_YORK) == second.astimezone(UTC)


def _length(day: datetime, send_window: SendWindow, zone: ZoneInfo) -> timedelta:
    intervals = window_intervals(day.date(), send_window, zone)
    return sum((end - start for start, end in intervals), timedelta())


def test_window_bounds_on_dst_days_have_real_lengths() -> None:
    assert _length(datetime(2026, 3, 29), window("01:00-05:00"), BERLIN) == timedelta(hours=3)
    assert _length(datetime(2026, 10, 25), window("01:00-05:00"), BERLIN) == timedelta(hours=5)


def test_fixed_zone_window_for_a_lead_elsewhere() -> None:
    berlin_hours = window("09:00-17:00", ["mon", "tue", "wed", "thu", "fri"], "Europe/Berlin")
    zone = resolve_zone("Asia/Seoul", berlin_hours, "UTC")
    seoul_afternoon = local(SEOUL, 2026, 6, 9, 15, 0)  # 08:00 in Berlin
    assert next_window_opening(seoul_afternoon, berlin_hours, zone) == local(
        BERLIN, 2026, 6, 9, 9, 0
    )


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_window_opening(datetime(2026, 6, 9, 12, 0), OFFICE_HOURS, BERLIN)
    with pytest.raises(ValueError, match="timezone-aware"):
        add_wait(datetime(2026, 6, 9, 12, 0), parse_duration("1d"), BERLIN)


# --- property: every hour of DST weeks, several zones and odd windows ---------------------

PROPERTY_WINDOWS = [
    OFFICE_HOURS,
    window("01:00-02:00"),
    window("02:30-03:30", ["sun", "mon"]),
    window("00:30-01:30", ["sat", "sun"]),
    window("22:00-24:00", ["wed"]),
]
# Each week holds a DST change in its zone (Seoul has none).
PROPERTY_WEEKS = [
    (NEW_YORK, datetime(2026, 3, 5)),
    (NEW_YORK, datetime(2026, 10, 29)),
    (BERLIN, datetime(2026, 3, 26)),
    (BERLIN, datetime(2026, 10, 22)),
    (SEOUL, datetime(2026, 6, 4)),
    (SYDNEY, datetime(2026, 4, 2)),
    (SYDNEY, datetime(2026, 10, 1)),
]


@pytest.mark.parametrize("zone,monday", PROPERTY_WEEKS, ids=lambda v: str(v))
@pytest.mark.parametrize("send_window", PROPERTY_WINDOWS, ids=lambda w: f"{w.days}{w.hours}")
def test_opening_is_inside_not_before_and_minimal(
    zone: ZoneInfo, monday: datetime, send_window: SendWindow
) -> None:
    start = localize(monday, zone).astimezone(UTC)
    for hour in range(0, 8 * 24):
        # Real hours (not wall hours) plus an odd offset, so repeated hours get visited too.
        at = start + timedelta(hours=hour, minutes=17 * (hour % 4))
        opens = next_window_opening(at, send_window, zone)
        assert opens >= at
        assert in_window(opens, send_window, zone)
        assert (opens == at) == in_window(at, send_window, zone)
        if hour % 23 == 0:
            _assert_nothing_earlier(at, opens, send_window, zone)


def _assert_nothing_earlier(
    at: datetime, opens: datetime, send_window: SendWindow, zone: ZoneInfo
) -> None:
    minute = at + timedelta(minutes=1)
    while minute < opens:
        assert not in_window(minute, send_window, zone), (at, minute, opens)
        minute += timedelta(minutes=1)


def test_openings_fall_on_allowed_local_days_and_hours() -> None:
    for zone in ZONES:
        start = datetime(2026, 3, 1, tzinfo=UTC)
        for hour in range(0, 24 * 60, 5):
            opens = next_window_opening(start + timedelta(hours=hour), OFFICE_HOURS, zone)
            wall = opens.astimezone(zone)
            assert wall.weekday() < 5
            assert time(9, 0) <= wall.time() < time(17, 0)


# --- waits -------------------------------------------------------------------------------


def test_calendar_wait_is_real_elapsed_time_across_spring_forward() -> None:
    saturday_noon = local(NEW_YORK, 2026, 3, 7, 12, 0)
    due = add_wait(saturday_noon, parse_duration("24h"), NEW_YORK)
    assert due - saturday_noon == timedelta(hours=24)
    assert due.astimezone(NEW_YORK).replace(tzinfo=None) == datetime(2026, 3, 8, 13, 0)
    assert due.tzinfo is UTC


def test_calendar_wait_across_fall_back_shows_an_hour_less_on_the_clock() -> None:
    saturday_noon = local(BERLIN, 2026, 10, 24, 12, 0)
    due = add_wait(saturday_noon, parse_duration("1d"), BERLIN)
    assert due - saturday_noon == timedelta(days=1)
    assert due.astimezone(BERLIN).replace(tzinfo=None) == datetime(2026, 10, 25, 11, 0)


@pytest.mark.parametrize("text", ["90m", "12h", "3d", "1w"])
def test_calendar_waits_add_their_span(text: str) -> None:
    start = local(SEOUL, 2026, 6, 9, 10, 0)
    assert add_wait(start, parse_duration(text), SEOUL) == start + parse_duration(text).span


@pytest.mark.parametrize(
    "zone,friday,monday",
    [
        # The UTC offset changes over each of these weekends.
        (NEW_YORK, datetime(2026, 3, 6, 10, 0), datetime(2026, 3, 9, 10, 0)),
        (NEW_YORK, datetime(2026, 10, 30, 10, 0), datetime(2026, 11, 2, 10, 0)),
        (BERLIN, datetime(2026, 3, 27, 10, 0), datetime(2026, 3, 30, 10, 0)),
        (SYDNEY, datetime(2026, 4, 3, 10, 0), datetime(2026, 4, 6, 10, 0)),
        (SEOUL, datetime(2026, 3, 6, 10, 0), datetime(2026, 3, 9, 10, 0)),
    ],
    ids=lambda v: str(v),
)
def test_one_business_day_from_friday_is_monday_same_wall_time(
    zone: ZoneInfo, friday: datetime, monday: datetime
) -> None:
    due = add_wait(friday.replace(tzinfo=zone), parse_duration("1 business day"), zone)
    assert due.astimezone(zone).replace(tzinfo=None) == monday


def test_business_days_across_dst_are_not_whole_days_of_real_time() -> None:
    friday = local(NEW_YORK, 2026, 3, 6, 10, 0)  # EST
    due = add_wait(friday, parse_duration("1 business day"), NEW_YORK)
    assert due == datetime(2026, 3, 9, 14, 0, tzinfo=UTC)  # 10:00 EDT
    assert due - friday == timedelta(days=3, hours=-1)


@pytest.mark.parametrize(
    "start,text,expected",
    [
        (datetime(2026, 6, 10, 10, 0), "1 business day", datetime(2026, 6, 11, 10, 0)),  # Wed
        (datetime(2026, 6, 11, 10, 0), "2 business days", datetime(2026, 6, 15, 10, 0)),  # Thu
        (datetime(2026, 6, 10, 10, 0), "5 business days", datetime(2026, 6, 17, 10, 0)),
        (datetime(2026, 6, 13, 10, 0), "1 business day", datetime(2026, 6, 15, 10, 0)),  # Sat
        (datetime(2026, 6, 13, 10, 0), "2 business days", datetime(2026, 6, 16, 10, 0)),
        (datetime(2026, 6, 14, 23, 0), "1 business day", datetime(2026, 6, 15, 23, 0)),  # Sun
        (datetime(2026, 6, 12, 10, 0), "10 business days", datetime(2026, 6, 26, 10, 0)),
    ],
)
def test_business_days_skip_weekends(start: datetime, text: str, expected: datetime) -> None:
    due = add_wait(start.replace(tzinfo=BERLIN), parse_duration(text), BERLIN)
    assert due.astimezone(BERLIN).replace(tzinfo=None) == expected


def test_business_days_count_in_the_lead_zone_not_the_start_zone() -> None:
    # Friday 23:30 UTC is already Saturday morning in Seoul.
    friday_utc = datetime(2026, 6, 12, 23, 30, tzinfo=UTC)
    due = add_wait(friday_utc, parse_duration("1 business day"), SEOUL)
    assert due.astimezone(SEOUL).replace(tzinfo=None) == datetime(2026, 6, 15, 8, 30)


def test_business_day_landing_in_a_gap_moves_past_it() -> None:
    # Iran moved clocks from 00:00 to 01:00 on Monday 2021-03-22.
    tehran = ZoneInfo("Asia/Tehran")
    due = add_wait(local(tehran, 2021, 3, 19, 0, 30), parse_duration("1 business day"), tehran)
    assert due.astimezone(tehran).replace(tzinfo=None) == datetime(2021, 3, 22, 1, 0)


@pytest.mark.parametrize("zone", ZONES, ids=lambda z: z.key)
@pytest.mark.parametrize("days", [1, 2, 3, 7])
def test_business_days_land_on_the_nth_weekday_after_at_the_same_wall_time(
    zone: ZoneInfo, days: int
) -> None:
    wait = parse_duration(f"{days} business days")
    start = datetime(2026, 3, 2, tzinfo=UTC)
    for hour in range(0, 24 * 42, 5):
        begin = (start + timedelta(hours=hour)).astimezone(zone)
        due = add_wait(begin, wait, zone).astimezone(zone)
        assert due > begin and due.weekday() < 5
        span = (due.date() - begin.date()).days
        weekdays = [(begin.date() + timedelta(days=n)).weekday() < 5 for n in range(1, span + 1)]
        assert sum(weekdays) == days
        assert due.time() == begin.time()  # no zone above changes clocks on a weekday
