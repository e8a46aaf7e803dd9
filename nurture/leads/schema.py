"""The shape of an incoming lead (CSV row or API body), validated and normalized.

Known personas come from the sequences, so they are passed in the validation context:
``LeadIn.model_validate(data, context=lead_context(catalog.personas()))``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Iterable, Mapping
from functools import lru_cache
from typing import Annotated, Any
from zoneinfo import ZoneInfo, available_timezones

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from nurture.core.stages import JourneyStage, LifecycleStage
from nurture.leads import documented

# ISO 3166-1 alpha-2, plus XK (Kosovo), which CRMs use although it is user-assigned.
_COUNTRIES = """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR
    BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ
    EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW
    GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY
    KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV
    MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY
    QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG
    TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS XK YE YT ZA
    ZM ZW
"""
COUNTRY_CODES = frozenset(_COUNTRIES.split())
# Spreadsheets exported in Britain often say UK; ISO says GB.
COUNTRY_ALIASES = {"UK": "GB"}
# language[-Script][-REGION]: en, en-GB, ko-KR, zh-Hant-TW, es-419 (underscores accepted).
_LOCALE = re.compile(r"^([A-Za-z]{2,3})(?:[-_]([A-Za-z]{4}))?(?:[-_]([A-Za-z]{2}|\d{3}))?$")
_SURROGATES = re.compile(r"[\udc80-\udcff]")
MAX_ATTRIBUTE_KEY = 100
# A lead's attributes, at most: this many (a CRM sends a few dozen), this much JSON (as an
# event's properties), values nested this deep ({"crm": {"owner": "x"}} is 1 level).
MAX_ATTRIBUTES = 100
MAX_ATTRIBUTES_BYTES = 16_000
MAX_ATTRIBUTE_DEPTH = 4
ATTRIBUTES_FIELD = "attributes"
MAX_COMPANY_SIZE = 2_000_000_000


def check_json_value(value: Any, depth: int = 0) -> Any:
    """An attribute's value, unchanged, if the database can store it as JSON: no NUL or
    non-UTF-8 text in any string or key, no NaN or Infinity, at most MAX_ATTRIBUTE_DEPTH
    levels of objects and lists."""
    if isinstance(value, str):
        check_text(value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("NaN and Infinity are not JSON")
    elif isinstance(value, (dict, list)):
        if depth >= MAX_ATTRIBUTE_DEPTH:
            raise ValueError(f"is nested more than {MAX_ATTRIBUTE_DEPTH} levels deep")
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            if isinstance(key, str):
                check_text(key)
            check_json_value(item, depth + 1)
    return value


# Each value is checked where it is, so a problem is reported as attributes.<name>.
AttributeValue = Annotated[Any, AfterValidator(check_json_value)]


class LeadIn(BaseModel):
    """One lead as given by a person or a system; every field but ``email`` may be empty.

    Empty values mean "unknown", so an update only overwrites what was given (see
    :meth:`provided`)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    # Lengths match the database columns, so a long value is a row error, not a failed batch.
    email: str = Field(max_length=320, json_schema_extra=documented.EMAIL)
    first_name: str = Field(default="", max_length=120, json_schema_extra=documented.ONE_LINE)
    last_name: str = Field(default="", max_length=120, json_schema_extra=documented.ONE_LINE)
    company: str = Field(default="", max_length=200, json_schema_extra=documented.ONE_LINE)
    title: str = Field(default="", max_length=200, json_schema_extra=documented.ONE_LINE)
    industry: str = Field(default="", max_length=120, json_schema_extra=documented.ONE_LINE)
    company_size: int | None = Field(
        default=None,
        ge=0,
        le=MAX_COMPANY_SIZE,
        json_schema_extra=documented.company_size(MAX_COMPANY_SIZE),
    )
    country: str = Field(
        default="", json_schema_extra=documented.country(COUNTRY_CODES, COUNTRY_ALIASES)
    )
    timezone: str = Field(default="", json_schema_extra=documented.timezone)
    locale: str = Field(default="", json_schema_extra=documented.LOCALE)
    persona: str = Field(default="", max_length=64, json_schema_extra=documented.ONE_LINE)
    journey_stage: JourneyStage = JourneyStage.awareness
    lifecycle_stage: LifecycleStage = LifecycleStage.lead
    attributes: dict[str, AttributeValue] = Field(
        default_factory=dict,
        json_schema_extra=documented.attributes(
            MAX_ATTRIBUTES, MAX_ATTRIBUTE_KEY, MAX_ATTRIBUTE_DEPTH, MAX_ATTRIBUTES_BYTES
        ),
    )

    @field_validator("*", mode="before")
    @classmethod
    def _clean_text(cls, value: Any) -> Any:
        return check_one_line(value)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return normalize_email(value)

    @field_validator("company_size", mode="before")
    @classmethod
    def _company_size(cls, value: Any) -> Any:
        if isinstance(value, bool):  # JSON true is not a head count (pydantic takes it as 1)
            raise ValueError("expected a whole number like 250, got a boolean")
        if not isinstance(value, str):
            return value
        digits = re.sub(r"[,_\s]", "", value)
        if not digits:
            return None
        if not digits.isascii() or not digits.isdigit():
            raise ValueError(f"expected a whole number like 250 or 1,200, got {value!r}")
        return int(digits)

    @field_validator("country")
    @classmethod
    def _country(cls, value: str) -> str:
        return normalize_country(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        if not value:
            return ""
        zone = canonical_timezone(value)
        if zone is None:
            raise ValueError(
                f"unknown time zone {value!r}: use an IANA name such as Asia/Seoul, "
                "Europe/Berlin or America/New_York"
            )
        return zone

    @field_validator("locale")
    @classmethod
    def _locale(cls, value: str) -> str:
        return normalize_locale(value)

    @field_validator("persona")
    @classmethod
    def _persona(cls, value: str, info: ValidationInfo) -> str:
        known = (info.context or {}).get("personas")
        if not value or known is None:
            return value
        return match_persona(value, known)

    @field_validator("journey_stage", "lifecycle_stage", mode="before")
    @classmethod
    def _stage(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("attributes", mode="before")
    @classmethod
    def _attribute_limits(cls, value: Any) -> Any:
        # Before the values are validated one by one: 20,000 of them are refused at once.
        if isinstance(value, Mapping):
            check_attribute_names(value)
            check_attribute_limits(value)
        return value

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, value: dict[str, Any]) -> dict[str, Any]:
        return clean_attributes(value)

    def provided(self) -> dict[str, Any]:
        """The fields that were given with a non-empty value: what an update overwrites."""
        values = self.model_dump(mode="json", exclude_unset=True)
        return {k: v for k, v in values.items() if v not in ("", None, {})}

    def new_lead_values(self, default_timezone: str) -> dict[str, Any]:
        """Every column of a new lead; a lead without a zone gets ``default_timezone``."""
        values = self.model_dump(mode="json")
        values["timezone"] = values["timezone"] or default_timezone
        return values


def lead_context(personas: Iterable[str]) -> dict[str, Any]:
    """The validation context that makes ``LeadIn`` check personas against the sequences."""
    return {"personas": frozenset(personas)}


def field_errors(error: ValidationError) -> list[tuple[str, str]]:
    """(field, message) for each problem, e.g. ("company_size", "expected a whole number...")."""
    found = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(row)"
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        found.append((field, message))
    return found


def check_text(value: str) -> None:
    """Refuse text the database cannot store faithfully."""
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    if _SURROGATES.search(value):
        raise ValueError("is not valid UTF-8 text (save the file as UTF-8)")


# Anything str.splitlines() breaks on, and the other C0/C1 control characters: in a name
# they would end up in a To: header, where the email library writes some as line breaks.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def check_line(value: str) -> None:
    """Refuse line breaks and control characters in a one-line field."""
    found = _CONTROL.search(value)
    if found:
        raise ValueError(f"contains a line break or control character ({found.group()!r})")


def check_one_line(value: Any) -> Any:
    """A validator's input, unchanged: text is refused if not storable or not one line."""
    # PostgreSQL refuses NUL in text; surrogates are bytes that were not UTF-8; a field
    # that ends up in an email header (a name) must be one line.
    if isinstance(value, str):
        check_text(value)
        check_line(value)
    return value


def normalize_email(value: str) -> str:
    """A deliverable-looking address: domain lower-cased (and in ASCII), local part as given.

    Compare addresses with ``email.lower()``; the database has a unique index on it."""
    try:
        result = validate_email(value.strip(), check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise ValueError(f"{value!r} is not a valid email address: {exc}") from None
    return result.ascii_email or result.normalized


def normalize_country(value: str) -> str:
    """An ISO 3166 alpha-2 code, upper-cased; empty stays empty."""
    code = COUNTRY_ALIASES.get(value.upper(), value.upper())
    if code and code not in COUNTRY_CODES:
        raise ValueError(f"unknown country code {value!r}: use ISO 3166 alpha-2, e.g. US, DE, KR")
    return code


def normalize_locale(value: str) -> str:
    """``ko_kr`` -> ``ko-KR``, ``zh-hant-tw`` -> ``zh-Hant-TW``; empty stays empty."""
    if not value:
        return ""
    match = _LOCALE.match(value)
    if not match:
        raise ValueError(f"bad locale {value!r}: use a language tag such as en, en-GB or ko-KR")
    language, script, region = match.groups()
    parts = [language.lower(), script.title() if script else "", region.upper() if region else ""]
    return "-".join(p for p in parts if p)


def match_persona(value: str, known: Collection[str]) -> str:
    """The known persona ``value`` names (case-insensitively), or a ValueError listing them."""
    by_lower = {p.lower(): p for p in known}
    if value.lower() in by_lower:
        return by_lower[value.lower()]
    listed = ", ".join(sorted(known)) or "none (no sequence names a persona)"
    raise ValueError(f"unknown persona {value!r}; known personas: {listed}")


def clean_attributes(value: dict[str, Any]) -> dict[str, Any]:
    """Attribute names stripped (their values were checked one by one already)."""
    return {str(key).strip(): item for key, item in value.items()}


def check_attribute_names(attributes: Mapping[Any, Any]) -> None:
    """Refuse an attribute name that is empty, longer than MAX_ATTRIBUTE_KEY or not text
    the database can store (the message quotes it)."""
    for key in attributes:
        name = str(key).strip()
        if not name or len(name) > MAX_ATTRIBUTE_KEY:
            raise ValueError(f"attribute name {key!r} must be 1 to {MAX_ATTRIBUTE_KEY} characters")
        try:
            check_text(name)
        except ValueError as exc:
            raise ValueError(f"attribute name {key!r} {exc}") from None


def check_attribute_limits(attributes: Mapping[Any, Any], which: str = "") -> None:
    """Refuse more than MAX_ATTRIBUTES attributes or MAX_ATTRIBUTES_BYTES of JSON
    (``which`` says whose, in the message)."""
    if len(attributes) > MAX_ATTRIBUTES:
        raise ValueError(f"{which}{len(attributes)} attributes; at most {MAX_ATTRIBUTES}")
    try:
        size = len(json.dumps(attributes, ensure_ascii=False, default=str).encode("utf-8"))
    except (TypeError, ValueError, RecursionError):
        raise ValueError("are not JSON data") from None
    if size > MAX_ATTRIBUTES_BYTES:
        raise ValueError(f"{which}{size} bytes as JSON; at most {MAX_ATTRIBUTES_BYTES}")


def merged_attributes(stored: Mapping[str, Any] | None, given: Mapping[str, Any]) -> dict[str, Any]:
    """The stored attributes updated with ``given``, as an update stores them; ValueError
    if the lead would end up past the limits (so updates cannot grow it without end)."""
    merged = {**(stored or {}), **given}
    check_attribute_limits(merged, "with the attributes it has, ")
    return merged


@lru_cache(maxsize=1)
def _zones_by_lower_name() -> dict[str, str]:
    return {name.lower(): name for name in available_timezones()}


def canonical_timezone(name: str) -> str | None:
    """The IANA spelling of ``name`` (matched case-insensitively), or None if unknown."""
    zones = _zones_by_lower_name()
    if zones:
        return zones.get(name.strip().lower())
    # No zone list on this machine (no tzdata): ask zoneinfo directly.
    try:
        ZoneInfo(name.strip())
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return None
    return name.strip()
