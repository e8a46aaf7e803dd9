"""Names in the order of the lead's language: given name first in English, family name
first in Korean and Japanese ("박민지", "佐藤 裕子"), both in the greeting a template
writes (``lead.display_name``) and in the ``To:`` display name."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

import pytest
from support.engine import SECRET, TEMPLATES

from nurture.authoring.lead_context import build_context
from nurture.authoring.templates import TemplateRenderer
from nurture.core.leads import display_name
from nurture.delivery.compose import PendingSend, compose_email
from nurture.delivery.mime import build_message, serialize
from nurture.sequences.engine import SendEmail
from nurture.settings import Settings


@pytest.mark.parametrize(
    ("first", "last", "locale", "shown"),
    [
        ("Alex", "Morgan", "en", "Alex Morgan"),
        ("Alex", "Morgan", "", "Alex Morgan"),
        ("민지", "박", "ko", "박민지"),
        ("민지", "박", "ko-KR", "박민지"),
        ("Minji", "Park", "ko", "Park Minji"),
        ("裕子", "佐藤", "ja", "佐藤 裕子"),
        ("裕子", "佐藤", "ja_JP", "佐藤 裕子"),
        ("伟", "王", "zh", "王伟"),
        ("Anna", "Nagy", "hu", "Nagy Anna"),
        ("민지", "", "ko", "민지"),
        ("", "박", "ko", "박"),
        ("  Alex ", "", "en", "Alex"),
        ("", "", "ja", ""),
    ],
)
def test_display_name_follows_the_language(first: str, last: str, locale: str, shown: str) -> None:
    assert display_name(first, last, locale) == shown


def test_templates_see_the_display_name_of_the_email_locale() -> None:
    lead = {"first_name": "裕子", "last_name": "佐藤", "locale": "en"}
    args = ("Nurture", "hi@n.example", "https://n.example/u/x", "drip", "Drip", "welcome")
    assert build_context(lead, *args)["lead"]["display_name"] == "裕子 佐藤"
    assert build_context(lead, *args, locale="ja")["lead"]["display_name"] == "佐藤 裕子"


@pytest.mark.parametrize(
    ("first", "last", "locale", "to"),
    [("민지", "박", "ko", "박민지"), ("Alex", "Morgan", "en", "Alex Morgan")],
)
def test_the_to_display_name_is_in_the_lead_s_order(
    first: str, last: str, locale: str, to: str
) -> None:
    settings = Settings(base_url="https://n.example", secret_key=SECRET, templates_dir=TEMPLATES)
    lead = {"email": "minji@acme.example", "first_name": first, "last_name": last}
    decision = SendEmail("welcome", "drip/welcome", "Hi", locale, None)
    pending = PendingSend(7, 1, decision, lead, "drip", "Drip")
    composed, _ = compose_email(
        settings, TemplateRenderer(TEMPLATES), pending, datetime(2026, 3, 2, tzinfo=UTC)
    )
    parsed = email.message_from_bytes(
        serialize(build_message(composed)), policy=email.policy.default
    )
    (address,) = parsed["To"].addresses
    assert (address.display_name, address.addr_spec) == (to, "minji@acme.example")
