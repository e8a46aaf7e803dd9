"""Durations as marketers write them in sequence YAML."""

from __future__ import annotations

from datetime import timedelta

import pytest

from nurture.core.durations import Duration, parse_duration


@pytest.mark.parametrize(
    "text,span",
    [
        ("3d", timedelta(days=3)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("1w", timedelta(weeks=1)),
        ("2 days", timedelta(days=2)),
        ("1 week", timedelta(weeks=1)),
        ("45 mins", timedelta(minutes=45)),
        (" 3D ", timedelta(days=3)),
    ],
)
def test_calendar_durations(text: str, span: timedelta) -> None:
    duration = parse_duration(text)
    assert duration == Duration(span=span)
    assert not duration.is_business
    assert duration.business_days == 0


@pytest.mark.parametrize(
    "text,days",
    [
        ("2 business days", 2),
        ("1 business day", 1),
        ("1 Business Days", 1),
        ("10 business days", 10),
        ("3businessdays", 3),
    ],
)
def test_business_days(text: str, days: int) -> None:
    duration = parse_duration(text)
    assert duration.is_business
    assert duration.business_days == days
    assert duration.span == timedelta(0)


def test_business_days_read_back_as_written() -> None:
    assert str(parse_duration("1 business day")) == "1 business day"
    assert str(parse_duration("2 business days")) == "2 business days"


@pytest.mark.parametrize(
    "text", ["soon", "-3d", "3", "3 fortnights", "d3", "", "1.5d", "3d 4h", "business days"]
)
def test_bad_durations_say_what_to_write(text: str) -> None:
    with pytest.raises(ValueError, match=r"bad duration .*e\.g\. '3d'"):
        parse_duration(text)


def test_zero_business_days_is_refused() -> None:
    with pytest.raises(ValueError, match="business days must be at least 1"):
        parse_duration("0 business days")


def test_a_bare_number_from_yaml_is_refused_with_its_value() -> None:
    with pytest.raises(ValueError, match="bad duration 3"):
        parse_duration(3)
