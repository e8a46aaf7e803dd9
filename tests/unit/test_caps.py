"""The frequency cap across all sequences: at most N emails per lead per period."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from nurture.sequences.caps import FrequencyCap, cap_release

WEEKLY = FrequencyCap(max_messages=3, period=timedelta(days=7))
NOW = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)  # a Wednesday


def days_ago(*days: float) -> list[datetime]:
    return [NOW - timedelta(days=d) for d in days]


def test_under_the_cap_may_send_now() -> None:
    assert cap_release([], NOW, WEEKLY) is None
    assert cap_release(days_ago(1, 2), NOW, WEEKLY) is None


def test_fourth_email_in_a_week_waits_until_the_oldest_ages_out() -> None:
    sent = days_ago(6, 3, 1)
    release = cap_release(sent, NOW, WEEKLY)
    assert release == NOW - timedelta(days=6) + timedelta(days=7)
    assert release is not None and release.tzinfo is UTC


def test_release_is_the_first_instant_the_cap_allows() -> None:
    sent = days_ago(6, 3, 1)
    release = cap_release(sent, NOW, WEEKLY)
    assert release is not None
    assert cap_release(sent, release, WEEKLY) is None
    assert cap_release(sent, release - timedelta(microseconds=1), WEEKLY) == release


def test_sends_older_than_the_period_do_not_count() -> None:
    assert cap_release(days_ago(30, 8, 7.5, 2, 1), NOW, WEEKLY) is None


def test_a_send_exactly_one_period_ago_has_aged_out() -> None:
    assert cap_release(days_ago(7, 2, 1), NOW, WEEKLY) is None
    assert cap_release(days_ago(6.999, 2, 1), NOW, WEEKLY) is not None


def test_future_sends_count_against_the_cap() -> None:
    # Another worker's clock ran ahead: its send is stamped an hour from now.
    sent = [*days_ago(2, 1), NOW + timedelta(hours=1)]
    assert cap_release(sent, NOW, WEEKLY) == NOW - timedelta(days=2) + timedelta(days=7)


def test_all_future_sends_defer_past_the_last_needed_one() -> None:
    sent = [NOW + timedelta(hours=h) for h in (1, 2, 3)]
    assert cap_release(sent, NOW, WEEKLY) == NOW + timedelta(hours=1, days=7)


def test_over_the_cap_enough_sends_must_age_out() -> None:
    # Five sends against a cap of three: three must age out before one more may go.
    sent = days_ago(1, 6, 2, 5, 4)  # unsorted on purpose
    assert cap_release(sent, NOW, WEEKLY) == NOW - timedelta(days=4) + timedelta(days=7)


def test_same_instant_sends_age_out_together() -> None:
    sent = days_ago(5, 5, 5)
    assert cap_release(sent, NOW, WEEKLY) == NOW + timedelta(days=2)


def test_sends_in_other_zones_are_compared_as_instants() -> None:
    seoul = ZoneInfo("Asia/Seoul")
    # 2026-06-04 08:00 in Seoul is 2026-06-03 23:00 UTC: 6.5 days before NOW.
    sent = [datetime(2026, 6, 4, 8, 0, tzinfo=seoul), *days_ago(2, 1)]
    assert cap_release(sent, NOW, WEEKLY) == datetime(2026, 6, 10, 23, 0, tzinfo=UTC)


def test_repeated_hour_sends_are_two_distinct_instants() -> None:
    new_york = ZoneInfo("America/New_York")
    first = datetime(2026, 11, 1, 1, 30, tzinfo=new_york)  # EDT
    second = datetime(2026, 11, 1, 1, 30, tzinfo=new_york, fold=1)  # EST, an hour later
    hourly = FrequencyCap(max_messages=2, period=timedelta(hours=2))
    now = datetime(2026, 11, 1, 6, 45, tzinfo=UTC)
    assert cap_release([second, first], now, hourly) == datetime(2026, 11, 1, 7, 30, tzinfo=UTC)


def test_the_answer_does_not_depend_on_input_order() -> None:
    rng = random.Random(7)
    sent = [NOW - timedelta(minutes=rng.randrange(-600, 12_000)) for _ in range(8)]
    expected = cap_release(sent, NOW, WEEKLY)
    for _ in range(20):
        rng.shuffle(sent)
        assert cap_release(sent, NOW, WEEKLY) == expected
        assert cap_release(tuple(sent), NOW, WEEKLY) == expected


@pytest.mark.parametrize("seed", range(25))
def test_release_is_allowed_and_minimal_for_random_histories(seed: int) -> None:
    rng = random.Random(seed)
    cap = FrequencyCap(max_messages=rng.randint(1, 4), period=timedelta(hours=rng.randint(1, 72)))
    sent = [NOW - timedelta(minutes=rng.randrange(-120, 5000)) for _ in range(rng.randint(0, 9))]
    release = cap_release(sent, NOW, cap)
    if release is None:
        assert sum(s > NOW - cap.period for s in sent) < cap.max_messages
        return
    assert release > NOW
    assert sum(s > release - cap.period for s in sent) == cap.max_messages - 1
    earlier = release - timedelta(seconds=1)
    assert sum(s > earlier - cap.period for s in sent) >= cap.max_messages
    assert cap_release(sent, release + timedelta(days=30), cap) is None


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"max_messages": 0, "period": timedelta(days=7)}, "at least 1"),
        ({"max_messages": 3, "period": timedelta(0)}, "positive"),
        ({"max_messages": 3, "period": timedelta(days=-1)}, "positive"),
    ],
)
def test_nonsense_caps_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FrequencyCap(**kwargs)  # type: ignore[arg-type]


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="now must be a timezone-aware"):
        cap_release([], NOW.replace(tzinfo=None), WEEKLY)
    with pytest.raises(ValueError, match="sent_at must be a timezone-aware"):
        cap_release([NOW.replace(tzinfo=None)], NOW, WEEKLY)
