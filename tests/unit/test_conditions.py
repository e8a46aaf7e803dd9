"""Branch conditions as data: attribute operators, behavior, and combinations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nurture.core.conditions import Activity, Condition, holds

NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
LEAD = {
    "email": "kai@acme.example",
    "industry": "software",
    "company_size": 250,
    "country": "DE",
    "title": "Head of Finance",
    "attributes": {"erp": "NetSuite", "source": ""},
}


def check(spec: dict[str, Any], activity: Activity | None = None) -> bool:
    return holds(Condition.model_validate(spec), LEAD, activity or Activity(), NOW)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"attribute": "industry", "eq": "software"}, True),
        ({"attribute": "industry", "ne": "software"}, False),
        ({"attribute": "industry", "in": ["retail", "software"]}, True),
        ({"attribute": "country", "not_in": ["DE", "AT"]}, False),
        ({"attribute": "company_size", "gte": 250}, True),
        ({"attribute": "company_size", "gt": 250}, False),
        ({"attribute": "company_size", "lt": 1000, "gte": 100}, True),
        ({"attribute": "title", "contains": "finance"}, True),
        ({"attribute": "erp", "eq": "NetSuite"}, True),  # falls back to attributes
        ({"attribute": "source", "exists": True}, False),  # empty is not set
        ({"attribute": "erp"}, True),
        ({"attribute": "missing", "gte": 3}, False),  # absent never compares
        ({"attribute": "industry", "gte": 3}, False),  # text vs number: no match
    ],
)
def test_attribute_operators(spec: dict[str, Any], expected: bool) -> None:
    assert check(spec) is expected


def test_combinations() -> None:
    big_software = {
        "all": [
            {"attribute": "industry", "eq": "software"},
            {"attribute": "company_size", "gte": 200},
        ]
    }
    assert check(big_software)
    assert check(
        {"any": [{"attribute": "country", "eq": "KR"}, {"attribute": "country", "eq": "DE"}]}
    )
    assert not check({"not": big_software})


def test_behavior_conditions() -> None:
    activity = Activity(
        opened_steps=frozenset({"welcome"}),
        clicked_steps=frozenset({"case-study"}),
        events=(("webinar_registered", NOW - timedelta(days=10)),),
    )
    assert check({"opened": "welcome"}, activity)
    assert check({"opened": "case-study"}, activity)  # a click implies the open
    assert not check({"clicked": "welcome"}, activity)
    assert check({"event": "webinar_registered"}, activity)
    assert check({"event": "webinar_registered", "within": "14d"}, activity)
    assert not check({"event": "webinar_registered", "within": "7d"}, activity)
    assert check({"event": "webinar_registered", "within": "10 business days"}, activity)


def test_a_condition_needs_exactly_one_kind() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Condition.model_validate({"opened": "a", "clicked": "b"})
    with pytest.raises(ValueError, match="exactly one"):
        Condition.model_validate({})
