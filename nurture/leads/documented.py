"""What the JSON schema (and so the OpenAPI document) says about lead and event fields:
the same rules the validators apply, written as JSON Schema, so a client (or a fuzzer)
that follows the document is never refused for something it did not say.

The validators stay the source of truth; ``tests/unit/test_documented_schema.py`` checks
that values these schemas allow are accepted, and values they forbid are refused."""

from __future__ import annotations

from typing import Any
from zoneinfo import available_timezones

from email_validator import SPECIAL_USE_DOMAIN_NAMES

# The control characters and line breaks check_line refuses (tab is allowed).
ONE_LINE_PATTERN = "^[^\\u0000-\\u0008\\u000a-\\u001f\\u007f-\\u009f\\u2028\\u2029]*$"
ONE_LINE: dict[str, Any] = {"pattern": ONE_LINE_PATTERN}
NO_NUL_PATTERN = "^[^\\u0000]*$"
# What str.strip() removes (str.isspace): JSON Schema's \\s is ECMAScript's, which differs
# (it leaves out U+001C-U+001F and U+0085), so the class is spelled out.
PY_SPACE = (
    "\\t\\n\\u000b\\u000c\\r\\u001c-\\u001f \\u0085\\u00a0\\u1680"
    "\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
)
NOT_BLANK_PATTERN = f"[^{PY_SPACE}]"


def _any_case(word: str) -> str:
    # ECMAScript patterns have no inline (?i): every letter as a class, [Tt][Ee][Ss][Tt].
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


# email-validator refuses addresses over 254 characters (RFC 5321's path limit) and
# domains under the special-use names of RFC 6761 and others (test, local, onion, ...).
_SPECIAL = "|".join(_any_case(name) for name in SPECIAL_USE_DOMAIN_NAMES)
EMAIL: dict[str, Any] = {
    "format": "email",
    "maxLength": 254,
    "pattern": f"^(?!.*[.@](?:{_SPECIAL})$)",
    "description": "A deliverable-looking address: not under test, local, invalid, ...",
}
# A language tag such as en, en-GB, ko-KR or zh-Hant-TW (underscores accepted), or empty.
LOCALE_PATTERN = "^(?:[A-Za-z]{2,3}(?:[-_][A-Za-z]{4})?(?:[-_](?:[A-Za-z]{2}|[0-9]{3}))?)?$"
LOCALE: dict[str, Any] = {
    "pattern": LOCALE_PATTERN,
    "description": "A language tag: en, en-GB, ko-KR, zh-Hant-TW (or empty).",
}
# A lead's attribute values nest at most this deep (see leads.schema.MAX_ATTRIBUTE_DEPTH).
_SCALAR: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": NO_NUL_PATTERN},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
    ]
}


def country(codes: frozenset[str], aliases: dict[str, str]) -> dict[str, Any]:
    """An ISO 3166 alpha-2 code (or empty); the API also takes it lower-cased."""
    return {
        "enum": ["", *sorted(codes | set(aliases))],
        "description": "ISO 3166-1 alpha-2 (case-insensitive; UK means GB), or empty.",
    }


def timezone(schema: dict[str, Any]) -> None:
    """An IANA time zone name (or empty: the default zone). A callable, so the zone list
    is read when the document is built, not whenever the module is imported."""
    schema["enum"] = ["", *sorted(available_timezones())]
    schema["description"] = "An IANA time zone (case-insensitive), or empty for the default."


def company_size(maximum: int) -> dict[str, Any]:
    """A head count; CSV files may write it with separators, the API as a number."""
    return {"anyOf": [{"type": "integer", "minimum": 0, "maximum": maximum}, {"type": "null"}]}


def attributes(max_count: int, max_name: int, max_depth: int, max_bytes: int) -> dict[str, Any]:
    """Up to ``max_count`` named values, nested at most ``max_depth`` levels."""
    return {
        "type": "object",
        "maxProperties": max_count,
        "propertyNames": _name(max_name),
        "additionalProperties": _value(max_depth),
        "description": (
            f"Custom fields: at most {max_count}, {max_bytes:,} bytes as JSON, values nested "
            f"at most {max_depth} levels; an update merges them with the stored ones."
        ),
    }


def properties(max_depth: int, max_bytes: int) -> dict[str, Any]:
    """An event's free-form properties: JSON nested at most ``max_depth`` levels."""
    return {
        "type": "object",
        "propertyNames": {"pattern": NO_NUL_PATTERN},
        "additionalProperties": _value(max_depth),
        "description": f"Free-form: at most {max_bytes:,} bytes as JSON, nested {max_depth} deep.",
    }


def _name(max_name: int) -> dict[str, Any]:
    # Names are stripped, so one of only spaces is empty.
    return {
        "minLength": 1,
        "maxLength": max_name,
        "pattern": f"^[^\\u0000]*[^\\u0000{PY_SPACE}][^\\u0000]*$",
    }


def _value(levels: int) -> dict[str, Any]:
    """A JSON value with at most ``levels`` levels of objects and lists inside it."""
    if levels == 0:
        return _SCALAR
    inner = _value(levels - 1)
    return {
        "anyOf": [
            *_SCALAR["anyOf"],
            {"type": "array", "items": inner},
            {
                "type": "object",
                "propertyNames": {"pattern": NO_NUL_PATTERN},
                "additionalProperties": inner,
            },
        ]
    }
