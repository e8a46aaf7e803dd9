"""The JSON schema of a lead and an event says what the validators do: a value the schema
allows is accepted, one it forbids is refused. The schemas are checked with a JSON Schema
validator (jsonschema-rs: ECMAScript regular expressions, as clients use them)."""

from __future__ import annotations

import sys
from typing import Any

import jsonschema_rs
import pytest
from pydantic import ValidationError

from nurture.leads import documented
from nurture.leads.event_schema import EventIn
from nurture.leads.schema import LeadIn


def lead_accepts(**fields: Any) -> bool:
    try:
        LeadIn.model_validate({"email": "sam@example.com", **fields})
    except ValidationError:
        return False
    return True


def event_accepts(**fields: Any) -> bool:
    try:
        EventIn.model_validate({"email": "sam@example.com", "type": "page_visit", **fields})
    except ValidationError:
        return False
    return True


def lead_schema_allows(**fields: Any) -> bool:
    return jsonschema_rs.validator_for(LeadIn.model_json_schema(), validate_formats=True).is_valid(
        {"email": "sam@example.com", **fields}
    )


def event_schema_allows(**fields: Any) -> bool:
    return jsonschema_rs.validator_for(EventIn.model_json_schema(), validate_formats=True).is_valid(
        {"email": "sam@example.com", "type": "page_visit", **fields}
    )


def test_not_blank_is_what_str_strip_keeps_for_every_character() -> None:
    check = jsonschema_rs.validator_for({"type": "string", "pattern": documented.NOT_BLANK_PATTERN})
    differ = [
        hex(code)
        for code in range(sys.maxunicode + 1)
        if not 0xD800 <= code <= 0xDFFF and check.is_valid(chr(code)) == chr(code).isspace()
    ]
    assert differ == []


@pytest.mark.parametrize(
    "email",
    [
        "sam@example.com",
        "Sam.O'Neil+news@Example.CO.KR",
        "a@b.info",
        "x@corp.test",
        "x@CORP.TEST",
        "x@printer.local",
        "x@host.localhost",
        "x@nowhere.invalid",
        "x@hidden.onion",
        "x@1.168.192.in-addr.arpa",
        "x@testing.com",
        "x@local.example.com",
        "no-at-sign",
        "two@@example.com",
        f"{'a' * 64}@{'b' * 60}.{'c' * 60}.{'d' * 60}.com",
    ],
)
def test_the_email_schema_and_the_validator_agree(email: str) -> None:
    assert lead_schema_allows(email=email) == lead_accepts(email=email)
    assert event_schema_allows(email=email) == event_accepts(email=email)


@pytest.mark.parametrize("name", ["Sam", "Ünal\tO", "", "a\nb", "a\x85b", "a\u2028b", "a\x00"])
def test_one_line_fields_agree(name: str) -> None:
    assert lead_schema_allows(first_name=name) == lead_accepts(first_name=name)
    assert event_schema_allows(title=name) == event_accepts(title=name)


@pytest.mark.parametrize("locale", ["", "en", "en-GB", "ko_kr", "zh-Hant-TW", "es-419", "e", "en-"])
def test_locales_agree(locale: str) -> None:
    assert lead_schema_allows(locale=locale) == lead_accepts(locale=locale)


@pytest.mark.parametrize("country", ["", "US", "KR", "UK", "XK", "ZZ", "USA"])
def test_countries_agree(country: str) -> None:
    assert lead_schema_allows(country=country) == lead_accepts(country=country)


@pytest.mark.parametrize("zone", ["", "Asia/Seoul", "America/New_York", "Mars/Olympus"])
def test_time_zones_agree(zone: str) -> None:
    assert lead_schema_allows(timezone=zone) == lead_accepts(timezone=zone)


@pytest.mark.parametrize("size", [0, 250, 2_000_000_000, 2_000_000_001, -1, True, None])
def test_company_sizes_agree(size: Any) -> None:
    assert lead_schema_allows(company_size=size) == lead_accepts(company_size=size)


def nested(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = {"next": value}
    return value


ATTRIBUTES = [
    {"plan": "pro", "seats": 40, "beta": True, "owner": None},
    {"crm": nested(4)},
    {"crm": nested(5)},
    {"list": [[[["deep"]]]]},
    {"list": [[[[["too deep"]]]]]},
    {"  ": 1},
    {"k" * 100: 1},
    {"k" * 101: 1},
    {"nul": "a\x00b"},
    {"nul\x00key": 1},
    {f"k{n}": n for n in range(100)},
    {f"k{n}": n for n in range(101)},
]


@pytest.mark.parametrize("attributes", ATTRIBUTES)
def test_attributes_agree(attributes: dict[str, Any]) -> None:
    assert lead_schema_allows(attributes=attributes) == lead_accepts(attributes=attributes)


@pytest.mark.parametrize("properties", [*ATTRIBUTES[:5], {"": 1}, {"x": {"a\x00": 1}}])
def test_event_properties_agree(properties: dict[str, Any]) -> None:
    allowed = event_schema_allows(properties=properties)
    assert allowed == event_accepts(properties=properties)


@pytest.mark.parametrize("when", ["2026-03-02T09:00:00+09:00", "2026-03-02T09:00:00", 1700000000])
def test_event_times_agree(when: Any) -> None:
    assert event_schema_allows(occurred_at=when) == event_accepts(occurred_at=when)
