"""The event vocabulary is defined once; the API's literal type must not drift from it."""

from __future__ import annotations

from typing import get_args

from nurture.core.vocabulary import SITE_EVENTS
from nurture.leads.event_schema import EventType


def test_the_api_event_types_are_the_site_events() -> None:
    assert get_args(EventType) == SITE_EVENTS
