"""Lead data and settings cannot add, drop or change headers: every hostile value in a name,
a company (through the subject), the sender name or Reply-To reads back, as a mail client
parses the wire bytes, as exactly the literal text in exactly the intended headers.

The values hide line breaks and extra addresses in RFC 2047 encoded words: the stdlib's
header parser decodes those, so a check on the raw value alone lets them through (on
CPython 3.11/3.12 the decoded CRLF became real Bcc and Reply-To headers and a new body).
"""

from __future__ import annotations

import base64
import dataclasses
import email
import email.policy
from collections import Counter
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import unquote
from pathlib import Path
from typing import Any

import pytest

from nurture.authoring.templates import TemplateRenderer
from nurture.delivery.compose import PendingSend, compose_email
from nurture.delivery.mime import OutgoingEmail, build_message, serialize
from nurture.sequences.engine import SendEmail
from nurture.settings import Settings

LEAD_EMAIL = "lead@acme.example"
SENDER_EMAIL = "hello@nurture.example"
REPLY_TO = "sales@nurture.example"
SUBJECT = "Welcome, {{ lead.company }}"
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
# Every header a built message has, each exactly once.
HEADERS = Counter(
    {
        "from": 1,
        "to": 1,
        "reply-to": 1,
        "subject": 1,
        "date": 1,
        "message-id": 1,
        "mime-version": 1,
        "list-unsubscribe": 1,
        "list-unsubscribe-post": 1,
        "x-nurture-sequence": 1,
        "x-nurture-step": 1,
        "content-type": 1,
    }
)
INJECTION = "Acme\r\nBcc: victim@evil.example\r\nReply-To: phish@evil.example\r\n\r\nphish"


def b_word(text: str, charset: str = "utf-8") -> str:
    return f"=?{charset}?b?{base64.b64encode(text.encode(charset)).decode()}?="


def q_word(text: str, charset: str = "utf-8") -> str:
    encoded = "".join(
        chr(byte) if chr(byte).isalnum() and byte < 128 else f"={byte:02X}"
        for byte in text.encode(charset)
    )
    return f"=?{charset}?q?{encoded}?="


# Values whose literal text has no line break: each must read back exactly as written.
ENCODED = {
    "b64 crlf bcc": b_word(INJECTION),
    "q crlf bcc": q_word(INJECTION),
    "b64 upper-case": b_word(INJECTION).replace("=?utf-8?b?", "=?UTF-8?B?"),
    "latin-1 q": q_word("x\r\nBcc: v@evil.example", "iso-8859-1"),
    "b64 in text": f"Hi {b_word(INJECTION)} there",
    "glued to text": f"pre{b_word(INJECTION)}post",
    "two adjacent words": b_word("Acme\r\n") + " " + q_word("Bcc: v@evil.example"),
    "nested": b_word(b_word(INJECTION)),
    "nested q in b": b_word("x " + q_word("\r\nBcc: v@evil.example")),
    "nul": q_word("a\x00b"),
    "u2028": b_word("a\u2028Bcc: v@evil.example"),
    "u0085": b_word("a\u0085Bcc: v@evil.example"),
    "unknown charset": "=?x-unknown?q?a=0D=0ABcc:_v@evil.example?=",
    "rfc2231 language": "=?utf-8*en?q?a=0D=0ABcc:_v@evil.example?=",
    "second recipient (b)": b_word("boss@evil.example, Q"),
    "second recipient (q)": "=?utf-8?q?boss=40evil.example=2C_Q?=",
    "address in a word": b_word('"a" <boss@evil.example>, Q <x'),
    "group in a word": b_word("undisclosed-recipients:; boss@evil.example"),
    "quoted word": '"' + b_word("boss@evil.example, Q") + '"',
    "word in comment": "(" + b_word("x>, boss@evil.example") + ")",
    "plain specials": 'Ann "the" O\'Brien, CFO <ceo@evil.example>; Bcc: x@evil.example',
    "backslashes and quotes": '\\" \\\\ "," <>',
    "group syntax": "undisclosed-recipients:;",
    "at and comma": "a@b.example, c@d.example",
    "half words": "=? ?= =??= =?utf-8?b?",
    "non-ascii with specials": "Müller, Hans <boss@evil.example>",
    "long, with a comma": "a" * 80 + ", boss@evil.example",
    "long words": ("Acme " + b_word("Bcc: v@evil.example") + " ") * 40,
    "long non-ascii": "가나다" * 100,
    "long commas": "x, " * 200,
}
# Line breaks written out: in lead data they become a space (as in a subject).
BREAKS = {
    "crlf": "Acme\r\nBcc: victim@evil.example",
    "lf": "Acme\nReply-To: phish@evil.example",
    "cr": "Acme\rX: 1",
    "u2028": "Acme\u2028Bcc: v@evil.example",
    "u0085": "Acme\u0085Bcc: v@evil.example",
    "vt ff fs": "Acme\x0b\x0c\x1cBcc: v@evil.example",
    "blank line": "Acme\r\n\r\nphish",
}
# Controls that are not line breaks: the message is refused, never sent altered.
CONTROLS = {"nul": "Acme\x00Bcc", "del": "Acme\x7f", "c1": "Acme\x9bBcc"}
LEAD_FIELDS = ("first_name", "last_name", "company")


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    (tmp_path / "drip").mkdir()
    (tmp_path / "drip" / "welcome.html").write_text("<p>About {{ lead.company }}.</p>\n")
    (tmp_path / "drip" / "welcome.txt").write_text("About {{ lead.company }}.\n")
    return tmp_path


def compose(templates: Path, lead: dict[str, Any], **settings: Any) -> OutgoingEmail:
    values = {
        "base_url": "https://nurture.example",
        "secret_key": "test-secret-key",
        "templates_dir": templates,
        "sender_email": SENDER_EMAIL,
        "sender_name": "Nurture",
        "reply_to": REPLY_TO,
        **settings,
    }
    decision = SendEmail("welcome", "drip/welcome", SUBJECT, "en", None)
    lead = {"email": LEAD_EMAIL, "first_name": "Alex", "last_name": "Morgan", **lead}
    pending = PendingSend(7, 1, decision, lead, "drip", "Drip")
    email_, _ = compose_email(Settings(**values), TemplateRenderer(templates), pending, NOW)
    return email_


def received(email_: OutgoingEmail) -> EmailMessage:
    parsed = email.message_from_bytes(serialize(build_message(email_)), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def one_line(text: str) -> str:
    return " ".join(text.split())


def assert_exactly(
    msg: EmailMessage, *, to_name: str, from_name: str, company: str, reply_to: str = REPLY_TO
) -> None:
    """The message has exactly the intended headers, each read back as the literal text."""
    assert Counter(name.lower() for name in msg) == HEADERS
    assert not msg.defects
    assert_mailbox(msg, "To", to_name, LEAD_EMAIL)
    assert_mailbox(msg, "From", from_name, SENDER_EMAIL)
    assert_mailbox(msg, "Reply-To", "", reply_to)
    assert subject(msg) == one_line(f"Welcome, {company}")
    unsubscribe = msg["List-Unsubscribe"]
    assert unsubscribe.startswith("<https://nurture.example/u/") and unsubscribe.endswith(">")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert parts[0].get_content().replace("\r\n", "\n") == f"About {company}.\n"
    html = parts[1].get_content()
    assert html.count("<p>") == 1 and "<p>About " in html and ".</p>" in html
    assert html.count("<img ") == 1 and "https://nurture.example/o/" in html  # the open pixel


def subject(msg: EmailMessage) -> str:
    """The decoded Subject, without the space of a fold before its first word (the stdlib
    starts a long ASCII subject on a continuation line, and keeps that space when parsing)."""
    raw = str(dict(msg.raw_items())["Subject"])
    text = str(msg["Subject"])
    return text.removeprefix(" ") if raw.startswith(("\r\n", "\n")) else text


def assert_mailbox(msg: EmailMessage, name: str, display_name: str, addr_spec: str) -> None:
    header = msg[name]
    assert not header.defects
    assert len(header.groups) == 1 and header.groups[0].display_name is None
    assert len(header.addresses) == 1
    address = header.addresses[0]
    assert address.addr_spec == addr_spec
    assert rfc2047_display_name(msg, name) == display_name
    if len(display_name) < 40:  # one encoded word at most: the stdlib reads it exactly
        assert address.display_name == display_name


def rfc2047_display_name(msg: EmailMessage, name: str) -> str:
    """The display name as RFC 2047 reads it (the space between two adjacent encoded words
    is no text; the stdlib's address parser keeps one, so long names are compared here)."""
    raw = "".join(str(dict(msg.raw_items())[name]).splitlines())
    phrase, bracket, _ = raw.rpartition("<")
    if not bracket:
        return ""
    phrase = phrase.strip()
    if phrase.startswith('"') and phrase.endswith('"'):
        return unquote(phrase)
    return str(make_header(decode_header(phrase)))


@pytest.mark.parametrize("value", ENCODED.values(), ids=ENCODED.keys())
@pytest.mark.parametrize("field", LEAD_FIELDS)
def test_lead_field_reads_back_literally(templates: Path, field: str, value: str) -> None:
    lead = {"company": "Acme", field: value}
    msg = received(compose(templates, lead))
    to_name = one_line(f"{lead.get('first_name', 'Alex')} {lead.get('last_name', 'Morgan')}")
    assert_exactly(msg, to_name=to_name, from_name="Nurture", company=lead["company"])


@pytest.mark.parametrize("value", ENCODED.values(), ids=ENCODED.keys())
def test_sender_name_reads_back_literally(templates: Path, value: str) -> None:
    msg = received(compose(templates, {"company": "Acme"}, sender_name=value))
    assert_exactly(msg, to_name="Alex Morgan", from_name=value, company="Acme")


@pytest.mark.parametrize("value", BREAKS.values(), ids=BREAKS.keys())
@pytest.mark.parametrize("field", LEAD_FIELDS)
def test_line_breaks_in_lead_data_become_spaces(templates: Path, field: str, value: str) -> None:
    lead = {"company": "Acme", field: value}
    msg = received(compose(templates, lead))
    to_name = one_line(f"{lead.get('first_name', 'Alex')} {lead.get('last_name', 'Morgan')}")
    # The body is not a header: the company's line breaks stay there as written.
    company = lead["company"]
    assert subject(msg) == one_line(f"Welcome, {company}")
    assert_mailbox(msg, "To", to_name, LEAD_EMAIL)
    assert Counter(name.lower() for name in msg) == HEADERS


@pytest.mark.parametrize("value", CONTROLS.values(), ids=CONTROLS.keys())
@pytest.mark.parametrize(
    ("field", "place"),
    [("first_name", "to_name"), ("last_name", "to_name"), ("company", "subject")],
)
def test_other_controls_in_lead_data_refuse_the_message(
    templates: Path, field: str, place: str, value: str
) -> None:
    email_ = compose(templates, {"company": "Acme", field: value})
    with pytest.raises(ValueError, match=rf"OutgoingEmail\.{place}"):
        build_message(email_)


@pytest.mark.parametrize("value", [*BREAKS.values(), *CONTROLS.values()])
def test_controls_in_the_sender_name_refuse_the_message(templates: Path, value: str) -> None:
    email_ = compose(templates, {"company": "Acme"}, sender_name=value)
    with pytest.raises(ValueError, match=r"OutgoingEmail\.from_name"):
        build_message(email_)


@pytest.mark.parametrize(
    "reply_to",
    ['"a, b"@nurture.example', "sales+q=1@nurture.example", "o'brien@nurture.example"],
)
def test_unusual_reply_to_reads_back_as_one_address(templates: Path, reply_to: str) -> None:
    msg = received(compose(templates, {"company": "Acme"}, reply_to=reply_to))
    assert_exactly(
        msg, to_name="Alex Morgan", from_name="Nurture", company="Acme", reply_to=reply_to
    )


@pytest.mark.parametrize(
    "reply_to",
    [
        "a@nurture.example, boss@evil.example",
        "Boss <boss@evil.example>",
        "sales@nurture.example\r\nBcc: v@evil.example",
        "sales@nurture.example\u2028Bcc: v@evil.example",
        b_word("boss@evil.example, x") + "@nurture.example",
        '"' + q_word("x\r\nBcc: v@evil.example") + '"@nurture.example',
        "=?utf-8?q?sales?=@nurture.example",
        "sales@nurture.example>, <boss@evil.example",
        "sales@nurture.example; boss@evil.example",
        "sales@(comment)nurture.example",
    ],
)
def test_hostile_reply_to_is_refused(templates: Path, reply_to: str) -> None:
    email_ = compose(templates, {"company": "Acme"}, reply_to=reply_to)
    with pytest.raises(ValueError, match=r"OutgoingEmail\.reply_to"):
        build_message(email_)


@pytest.mark.parametrize(
    "to_email",
    [
        b_word("boss@evil.example, x") + "@acme.example",
        '"' + b_word("x\r\nBcc: v@evil.example") + '"@acme.example',
        "=?utf-8?q?lead?=@acme.example",
    ],
)
def test_encoded_words_in_the_lead_address_are_refused(templates: Path, to_email: str) -> None:
    email_ = compose(templates, {"company": "Acme", "email": to_email})
    with pytest.raises(ValueError, match=r"OutgoingEmail\.to_email"):
        build_message(email_)


def test_encoded_word_syntax_is_sent_as_the_text_the_marketer_wrote(templates: Path) -> None:
    # The stdlib would decode it (and preview shows the literal text): sent as written.
    email_ = compose(templates, {"company": "=?utf-8?q?looks_encoded?="})
    head = serialize(build_message(email_)).split(b"\r\n\r\n", 1)[0]
    assert b"looks_encoded" not in head  # never passed through as an encoded word
    assert subject(received(email_)) == "Welcome, =?utf-8?q?looks_encoded?="


@pytest.mark.parametrize("value", [b_word(INJECTION), q_word(INJECTION), "=?" * 60])
def test_extra_header_values_read_back_literally(templates: Path, value: str) -> None:
    email_ = dataclasses.replace(
        compose(templates, {"company": "Acme"}), headers=(("X-Nurture-Step", value),)
    )
    msg = received(email_)
    assert msg.get_all("X-Nurture-Step") == [value]
    assert "bcc" not in {name.lower() for name in msg}
