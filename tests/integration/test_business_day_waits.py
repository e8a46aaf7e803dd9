"""Business-day waits skip the public holidays where the lead is, as SLAs do: the sequence's
``business_days`` override, else the lead's country, else the default country, else
weekends only. Frozen time; the engine end to end through the tick."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from freezegun import freeze_time
from support.engine import TEMPLATES as ENGINE_TEMPLATES
from support.engine import add_lead, enrollment, make_runtime, messages, tick_at

from nurture.delivery.transports import MemoryTransport
from nurture.program.validate import validate_path
from nurture.runtime import Runtime
from nurture.sequences.business_days import BusinessCalendar
from nurture.sequences.engine import Context, Position, WaitUntil, business_calendar, decide
from nurture.sequences.loading import load_sequences
from nurture.sequences.spec import SequenceSpec
from nurture.sequences.versions import spec_from_document

SEOUL = ZoneInfo("Asia/Seoul")
NEW_YORK = ZoneInfo("America/New_York")
TEMPLATES = ENGINE_TEMPLATES
SEQUENCE = """\
key: kr-drip
name: Korean drip
audience:
  personas: [korean]
  journey_stages: [awareness]
steps:
  - id: welcome
    email: {template: drip/welcome, subject: "Hello"}
  - id: pause
    wait: 2 business days
  - id: followup
    email: {template: drip/followup, subject: "A follow-up"}
"""


def spec(**business_days: Any) -> SequenceSpec:
    document = yaml.safe_load(SEQUENCE)
    if business_days:
        document["business_days"] = business_days
    return SequenceSpec.model_validate(document, context={"authored": True})


def wait_ends(sequence: SequenceSpec, lead: dict[str, Any], **context: Any) -> datetime:
    """When the 2-business-day wait started now (the frozen clock) ends, in UTC."""
    now = datetime.now(UTC)
    lead = {"lifecycle_stage": "lead", "timezone": "Asia/Seoul", **lead}
    decision = decide(sequence, Position("pause", now), Context(lead=lead, **context), now)
    assert isinstance(decision, WaitUntil) and decision.step_id == "followup"
    return decision.run_at


def seoul(month: int, day: int, hour: int = 10) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=SEOUL).astimezone(UTC)


# --- the lead's country --------------------------------------------------------------------


@freeze_time("2026-09-23 01:00:00")  # Wednesday 10:00 in Seoul
def test_a_korean_leads_wait_skips_chuseok() -> None:
    # Chuseok: Thursday 24 to Saturday 26 September 2026. Monday 28 is the first business day.
    assert wait_ends(spec(), {"country": "KR"}) == seoul(9, 29)
    # Weekends only, as before: Thursday and Friday count.
    assert wait_ends(spec(), {"country": ""}) == seoul(9, 25)


@freeze_time("2026-02-13 01:00:00")  # Friday 10:00 in Seoul
def test_a_korean_leads_wait_skips_korean_new_year() -> None:
    # Seollal: Monday 16 to Wednesday 18 February 2026.
    assert wait_ends(spec(), {"country": "KR"}) == seoul(2, 20)
    assert wait_ends(spec(), {"country": "US"}) == seoul(2, 18)  # Presidents' Day is the 16th
    assert wait_ends(spec(), {}) == seoul(2, 17)


@freeze_time("2026-11-25 15:00:00")  # Wednesday 10:00 in New York
def test_an_american_leads_wait_skips_thanksgiving() -> None:
    lead = {"country": "US", "timezone": "America/New_York"}
    # Thanksgiving is Thursday 26 November; Friday counts, then Monday.
    ends = wait_ends(spec(), lead)
    assert ends.astimezone(NEW_YORK) == datetime(2026, 11, 30, 10, 0, tzinfo=NEW_YORK)


@freeze_time("2026-06-12 01:00:00")  # Friday 10:00 in Seoul, no holiday near
def test_a_weekend_is_skipped_with_or_without_a_calendar() -> None:
    assert wait_ends(spec(), {"country": "KR"}) == seoul(6, 16)  # Monday, then Tuesday
    assert wait_ends(spec(), {}) == seoul(6, 16)


# --- no country on the lead ----------------------------------------------------------------


@freeze_time("2026-09-23 01:00:00")
def test_a_lead_without_a_country_uses_the_default_country() -> None:
    assert wait_ends(spec(), {"country": ""}, default_country="KR") == seoul(9, 29)
    assert wait_ends(spec(), {}, default_country="KR") == seoul(9, 29)
    # The lead's own country wins over the default.
    assert wait_ends(spec(), {"country": "US"}, default_country="KR") == seoul(9, 25)


@freeze_time("2026-09-23 01:00:00")
def test_a_lead_without_a_country_and_no_default_counts_weekends_only() -> None:
    assert wait_ends(spec(), {}) == seoul(9, 25)
    # A country the holidays package does not know has no public holidays.
    assert wait_ends(spec(), {"country": "AQ"}, default_country="KR") == seoul(9, 25)


# --- the sequence's override ---------------------------------------------------------------


@freeze_time("2026-09-23 01:00:00")
def test_the_sequence_country_wins_over_the_lead_and_the_default() -> None:
    korean_desk = spec(country="KR")
    assert wait_ends(korean_desk, {"country": "US"}, default_country="US") == seoul(9, 29)
    assert wait_ends(spec(country="none"), {"country": "KR"}, default_country="KR") == seoul(9, 25)


@freeze_time("2026-12-29 01:00:00")  # Tuesday 10:00 in Seoul
def test_company_days_off_and_working_weekdays_from_the_sequence() -> None:
    year_end = spec(extra_holidays=["2026-12-30", date(2026, 12, 31)])
    # The lead's country still applies (1 January is New Year's Day): Monday 4, Tuesday 5.
    assert wait_ends(year_end, {"country": "KR"}) == datetime(2027, 1, 5, 1, 0, tzinfo=UTC)
    sunday_to_thursday = spec(country="none", days=["sun", "mon", "tue", "wed", "thu"])
    assert wait_ends(sunday_to_thursday, {}) == seoul(12, 31)  # Wednesday, Thursday
    calendar = business_calendar(sunday_to_thursday, Context(lead={}))
    assert calendar == BusinessCalendar("", frozenset(), frozenset({6, 0, 1, 2, 3}))


def test_calendar_waits_ignore_the_calendar() -> None:
    three_days = yaml.safe_load(SEQUENCE.replace("2 business days", "3d"))
    sequence = SequenceSpec.model_validate({**three_days, "business_days": {"country": "KR"}})
    now = seoul(9, 23)
    lead = {"country": "KR", "lifecycle_stage": "lead", "timezone": "Asia/Seoul"}
    decision = decide(sequence, Position("pause", now), Context(lead=lead), now)
    assert decision == WaitUntil("followup", seoul(9, 26))


# --- validation ----------------------------------------------------------------------------


def write(folder: Path, business_days: str) -> Path:
    path = folder / "kr.yaml"
    path.write_text(SEQUENCE + "business_days:\n" + business_days, encoding="utf-8")
    return path


def errors_in(path: Path) -> list[str]:
    return [str(p) for p in validate_path(path, TEMPLATES, "en") if p.severity == "error"]


@pytest.mark.parametrize(
    "block,line,message",
    [
        ("  country: XX\n", 14, "business_days.country: unknown country 'XX'"),
        ("  country: Korea\n", 14, "business_days.country: unknown country 'Korea'"),
        ("  country: NO\n", 14, "business_days.country: country must be text: write Norway"),
        ("  days: [mon, funday]\n", 14, "business_days.days: days must be among mon"),
        (
            "  country: KR\n  extra_holidays: [2026-12-31, tomorrow]\n",
            15,
            "business_days.extra_holidays[1]: Input should be a valid date",
        ),
        ("  holidays: KR\n", 14, "business_days: unknown field 'holidays'"),
    ],
)
def test_bad_business_days_are_named_at_their_line(
    tmp_path: Path, block: str, line: int, message: str
) -> None:
    path = write(tmp_path, block)
    errors = errors_in(path)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{path}:{line}: {message}"), errors[0]


def test_good_business_days_load(tmp_path: Path) -> None:
    block = "  country: kr\n  extra_holidays: [2026-12-31]\n  days: [Mon, tue, wed, thu, fri]\n"
    loaded, problems = load_sequences(write(tmp_path, block).parent)
    assert [p for p in problems if p.severity == "error"] == []
    rule = loaded[0].spec.business_days
    assert rule is not None and rule.country == "KR" and rule.extra_holidays == [date(2026, 12, 31)]
    assert rule.weekdays == frozenset(range(5))


def test_sequences_without_business_days_keep_their_version() -> None:
    # The new field is left out of the stored document when unset: no new version on upgrade.
    assert "business_days" not in spec().model_dump(mode="json", by_alias=True, exclude_none=True)


@freeze_time("2026-09-23 01:00:00")
def test_a_stored_version_with_a_country_no_longer_known_still_reads() -> None:
    document = {**yaml.safe_load(SEQUENCE), "business_days": {"country": "ZZ"}}
    stored = spec_from_document(document)  # not as authored: no country check
    assert stored.business_days is not None and stored.business_days.country == "ZZ"
    assert wait_ends(stored, {"country": "KR"}) == seoul(9, 25)  # weekends only


# --- the engine, through the tick ----------------------------------------------------------


@pytest.fixture
def rt(db_url: str, tmp_path: Path) -> Iterator[Runtime]:
    sequences = tmp_path / "sequences"
    sequences.mkdir()
    (sequences / "kr.yaml").write_text(SEQUENCE, encoding="utf-8")
    runtime = make_runtime(db_url, MemoryTransport(), seoul(9, 23), sequences_dir=sequences)
    yield runtime
    runtime.close()


def test_a_korean_leads_two_business_days_skip_chuseok_in_the_tick(rt: Runtime) -> None:
    wednesday = seoul(9, 23)  # Wednesday 23 September 2026, 10:00 in Seoul
    in_seoul = {"persona": "korean", "timezone": "Asia/Seoul"}
    korean = add_lead(rt, "minji@example.kr", wednesday, country="KR", **in_seoul)
    american = add_lead(rt, "sam@example.com", wednesday, country="US", **in_seoul)
    assert tick_at(rt, wednesday).total_sent == 2
    assert enrollment(rt, korean).next_run_at == seoul(9, 29)  # after Chuseok and the weekend
    assert enrollment(rt, american).next_run_at == seoul(9, 25)
    tick_at(rt, seoul(9, 25))
    tick_at(rt, seoul(9, 28))
    assert [m.lead_id for m in messages(rt, step_id="followup")] == [american]
    tick_at(rt, seoul(9, 29))
    assert sorted(m.lead_id for m in messages(rt, step_id="followup")) == [korean, american]
