"""The shape of a behavior event as the API and nurture events import take it, checked field by
field."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from nurture.core.vocabulary import SITE_EVENTS
from nurture.leads import documented
from nurture.leads.schema import (
    MAX_ATTRIBUTE_DEPTH,
    check_json_value,
    check_one_line,
    check_text,
    normalize_email,
)

# Site behavior the API takes. Delivery and email engagement events (sent, opened,
# clicked, unsubscribed, ...) are written by the engine and the tracking endpoints only.
API_EVENT_TYPES = SITE_EVENTS


# Spelled out for pydantic and the OpenAPI enum; a test keeps it equal to SITE_EVENTS.
EventType = Literal[
    "page_visit",
    "content_download",
    "webinar_registered",
    "webinar_attended",
    "form_submitted",
    "pricing_page_view",
    "demo_requested",
    "contact_sales_requested",
]


ContentStage = Literal["awareness", "consideration", "decision"]


# Batches larger than this are refused (split them): one batch is one transaction.
MAX_BATCH = 5000


MAX_DEDUPE_KEY = 190  # stored with the "api:" prefix in a 200-character column


MAX_PROPERTIES_BYTES = 16_000


class EventIn(BaseModel):
    """One behavior event, as the API and ``nurture events import`` take it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    email: str = Field(
        max_length=320,
        description="The lead's address (matched case-insensitively).",
        json_schema_extra=documented.EMAIL,
    )
    type: EventType
    occurred_at: AwareDatetime | None = Field(
        default=None, description="When it happened, with a time zone (default: when received)."
    )
    dedupe_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_DEDUPE_KEY,
        json_schema_extra=documented.ONE_LINE,
        description="Your unique id of the event; default: a hash of its content.",
    )
    url: str = Field(default="", max_length=2000, json_schema_extra=documented.ONE_LINE)
    title: str = Field(default="", max_length=500, json_schema_extra=documented.ONE_LINE)
    content_stage: ContentStage | None = Field(
        default=None, description="Stage of the content: awareness, consideration or decision."
    )
    properties: dict[str, Any] = Field(
        default_factory=dict,
        json_schema_extra=documented.properties(MAX_ATTRIBUTE_DEPTH, MAX_PROPERTIES_BYTES),
    )

    @field_validator("email", "url", "title", "dedupe_key", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return check_one_line(value)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return _normalized_email(value)

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _instant(cls, value: Any) -> Any:
        # pydantic would read a number as Unix seconds: the API takes ISO 8601 text only.
        if isinstance(value, (int, float)):
            raise ValueError("expected an ISO 8601 date-time such as 2026-03-02T09:00:00+09:00")
        return value

    @field_validator("content_stage", mode="before")
    @classmethod
    def _stage(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip().lower() or None
        return value

    @field_validator("properties")
    @classmethod
    def _properties(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            try:
                check_text(key)
                check_json_value(item)
            except ValueError as exc:
                raise ValueError(f"{key!r} {exc}") from None
        size = len(json.dumps(value, ensure_ascii=False).encode("utf-8"))
        if size > MAX_PROPERTIES_BYTES:
            raise ValueError(f"are {size} bytes as JSON; at most {MAX_PROPERTIES_BYTES}")
        return value


@lru_cache(maxsize=16_384)
def _normalized_email(value: str) -> str:
    # A batch names the same leads again and again, and the check costs ~40 µs: a pure
    # function of the text, remembered (an invalid address raises, which is not cached).
    return normalize_email(value)


class EventBatch(BaseModel):
    """Several events in one request: one transaction."""

    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)
