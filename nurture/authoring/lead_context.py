"""What a template sees: plain data built from a lead (never ORM objects, so a template
cannot reach the database), and the sample leads preview and validate render with."""

from __future__ import annotations

from collections.abc import (
    Mapping,
)
from typing import Any, Protocol

from nurture.core.leads import LEAD_FIELDS, display_name

# What a template sees of a lead: its fields and its free-form attributes.
TEMPLATE_LEAD_FIELDS = (*LEAD_FIELDS, "attributes")


class LeadData(Protocol):
    """A lead's fields without the ORM object: a row of ``Lead``'s columns (id, email and
    LEAD_FIELDS), read by attribute."""

    id: int
    email: str


def locale_chain(locale: str) -> list[str]:
    """Locale tags to try before the default: ``ko-KR`` -> ``['ko-KR', 'ko']``."""
    tag = locale.strip().replace("_", "-")
    chain = [tag] if tag else []
    language = tag.split("-")[0]
    if language and language not in chain:
        chain.append(language)
    return chain


def plain(value: Any) -> Any:
    """Plain data only (dicts, lists, str, numbers, bool, None): anything else becomes text."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def build_context(
    lead: Mapping[str, Any],
    sender_name: str,
    sender_email: str,
    unsubscribe_url: str,
    sequence_key: str,
    sequence_name: str,
    step_id: str,
    *,
    locale: str = "",
) -> dict[str, Any]:
    """What a template sees: ``lead``, ``sender``, ``unsubscribe_url``, ``sequence``,
    ``step``, all plain data. ``lead.display_name`` is the full name in the order of the
    locale the email is written in (``locale``, else the lead's own)."""
    shown = plain(lead)
    shown["display_name"] = display_name(
        str(shown.get("first_name") or ""),
        str(shown.get("last_name") or ""),
        locale or str(shown.get("locale") or ""),
    )
    return {
        "lead": shown,
        "sender": {"name": sender_name, "email": sender_email},
        "unsubscribe_url": unsubscribe_url,
        "sequence": {"key": sequence_key, "name": sequence_name},
        "step": {"id": step_id},
    }


def lead_fields(lead: LeadData) -> dict[str, Any]:
    """The ``lead`` a template sees, copied out of the ORM object (or a row of its columns)."""
    return {name: plain(getattr(lead, name)) for name in TEMPLATE_LEAD_FIELDS}


_SAMPLE_PEOPLE = {
    "ko": ("민준", "김", "한빛테크", "KR", "Asia/Seoul"),
    "ja": ("陽翔", "佐藤", "さくらシステムズ", "JP", "Asia/Tokyo"),
}


_DEFAULT_PERSON = ("Alex", "Morgan", "Northwind Analytics", "US", "America/New_York")


_SAMPLE_TITLES = {
    "finance_leader": "Chief Financial Officer",
    "it_director": "Director of IT",
    "procurement_manager": "Procurement Manager",
}


def sample_lead(persona: str, journey_stage: str, locale: str) -> dict[str, Any]:
    """A plausible lead of one persona, stage and locale (for validation and previews)."""
    language = locale_chain(locale)[-1] if locale_chain(locale) else ""
    first, last, company, country, zone = _SAMPLE_PEOPLE.get(language, _DEFAULT_PERSON)
    return {
        "first_name": first,
        "last_name": last,
        "email": "alex.morgan@northwind.example",
        "company": company,
        "title": _SAMPLE_TITLES.get(persona, persona.replace("_", " ").title()),
        "industry": "Manufacturing",
        "company_size": 250,
        "country": country,
        "timezone": zone,
        "locale": locale,
        "persona": persona,
        "journey_stage": journey_stage,
        "lifecycle_stage": "lead",
        "attributes": {},
    }
