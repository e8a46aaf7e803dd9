"""What a mail client sees in the messages build_message makes (parsed back from the wire bytes)."""

from __future__ import annotations

import dataclasses
import email
import email.policy
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from zoneinfo import ZoneInfo

import pytest

from nurture.delivery.headers import POLICY, normalize_address
from nurture.delivery.mime import OutgoingEmail, build_message, make_message_id, serialize

SEOUL = ZoneInfo("Asia/Seoul")
SUBJECT = "리드 육성 가이드: 3단계"
SENDER_NAME = "너처 마케팅팀"
# Signed tokens are long: longer than a header line may be before folding.
UNSUBSCRIBE_URL = "https://nurture.example/unsubscribe/" + "eyJsIjo0Mn0." + "a1B2c3D4_-" * 12
HTML = """<html><head><style>
p.lead { color: #336699; font-size: 16px; }
@media (max-width: 600px) { p.lead { font-size: 20px !important; } }
</style></head>
<body><p class="lead">안녕하세요 김민준님, Tom &amp; Jerry &lt;team&gt;</p></body></html>"""
TEXT = "안녕하세요 김민준님,\nTom & Jerry <team>\n"


def outgoing(**changes: object) -> OutgoingEmail:
    base = OutgoingEmail(
        to_email="minjun@example.co.kr",
        to_name="김민준",
        from_email="hello@nurture.example",
        from_name=SENDER_NAME,
        reply_to="sales@nurture.example",
        subject=SUBJECT,
        html=HTML,
        text=TEXT,
        message_id=make_message_id("nurture.42.9f86d081", "nurture.example"),
        unsubscribe_url=UNSUBSCRIBE_URL,
        unsubscribe_mailto="unsubscribe@nurture.example",
        headers=(("X-Nurture-Sequence", "onboarding"), ("X-Nurture-Step", "3")),
        date=datetime(2025, 3, 4, 9, 30, tzinfo=SEOUL),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def received(email_: OutgoingEmail) -> EmailMessage:
    """Serialize, then parse as a modern mail client would."""
    parsed = email.message_from_bytes(serialize(build_message(email_)), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def head_lines(raw: bytes) -> list[bytes]:
    head = raw.split(b"\r\n\r\n", 1)[0]
    return head.split(b"\r\n")


def test_multipart_alternative_with_text_first_then_html() -> None:
    msg = received(outgoing())
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert parts[0].get_content().replace("\r\n", "\n") == TEXT
    assert "안녕하세요 김민준님" in parts[1].get_content()
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_body(("plain",)) is parts[0]


def test_korean_subject_and_names_decode_intact() -> None:
    msg = received(outgoing(to_name="山田 太郎"))
    assert msg["Subject"] == SUBJECT
    sender = msg["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == (SENDER_NAME, "hello@nurture.example")
    recipient = msg["To"].addresses[0]
    assert (recipient.display_name, recipient.addr_spec) == ("山田 太郎", "minjun@example.co.kr")
    assert msg["Reply-To"].addresses[0].addr_spec == "sales@nurture.example"


def test_wire_bytes_are_ascii_with_crlf_line_ends() -> None:
    raw = serialize(build_message(outgoing()))
    raw.decode("ascii")  # headers RFC 2047-encoded, bodies quoted-printable/base64
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    subject = next(line for line in head_lines(raw) if line.startswith(b"Subject:"))
    assert subject.startswith(b"Subject: =?utf-8?")
    # Body lines stay short: css_inline's single-line HTML must not break SMTP's 998 limit.
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 78


def test_list_unsubscribe_carries_https_url_and_mailto() -> None:
    msg = received(outgoing())
    assert msg["List-Unsubscribe"] == (f"<{UNSUBSCRIBE_URL}>, <mailto:unsubscribe@nurture.example>")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # The long URL is never turned into RFC 2047 encoded-words, which clients would not decode.
    raw = serialize(build_message(outgoing()))
    assert f"<{UNSUBSCRIBE_URL}>".encode() in raw


def test_list_unsubscribe_without_mailto_has_only_the_url() -> None:
    msg = received(outgoing(unsubscribe_mailto=""))
    assert msg["List-Unsubscribe"] == f"<{UNSUBSCRIBE_URL}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_unsubscribe_mailto_may_be_a_full_uri() -> None:
    mailto = "mailto:unsubscribe@nurture.example?subject=unsubscribe-42"
    msg = received(outgoing(unsubscribe_mailto=mailto))
    assert msg["List-Unsubscribe"] == f"<{UNSUBSCRIBE_URL}>, <{mailto}>"


def test_css_is_inlined_and_style_block_kept_for_media_queries() -> None:
    html = received(outgoing()).get_body(("html",))
    assert html is not None
    content = html.get_content()
    assert 'style="color: #336699;font-size: 16px;"' in content.replace("; ", ";")
    assert "@media (max-width: 600px)" in content


def test_html_escaping_is_kept_not_doubled() -> None:
    html = received(outgoing()).get_body(("html",))
    assert html is not None
    content = html.get_content()
    assert "Tom &amp; Jerry &lt;team&gt;" in content
    assert "&amp;amp;" not in content


def test_same_email_builds_to_the_same_bytes_and_message_id() -> None:
    first = serialize(build_message(outgoing()))
    second = serialize(build_message(outgoing()))
    assert first == second
    assert received(outgoing())["Message-ID"] == "<nurture.42.9f86d081@nurture.example>"


def test_make_message_id_is_deterministic_and_validated() -> None:
    assert make_message_id("nurture.7.abc", "nurture.example") == "<nurture.7.abc@nurture.example>"
    assert make_message_id("n.1", "例え.jp") == "<n.1@xn--r8jz45g.jp>"
    with pytest.raises(ValueError, match="token"):
        make_message_id("has space", "nurture.example")
    with pytest.raises(ValueError, match="token"):
        make_message_id("a..b", "nurture.example")


def test_bare_message_id_is_accepted_and_bracketed() -> None:
    msg = received(outgoing(message_id="nurture.42.x@nurture.example"))
    assert msg["Message-ID"] == "<nurture.42.x@nurture.example>"


def test_date_header_keeps_the_given_moment() -> None:
    msg = received(outgoing())
    assert msg["Date"].datetime == datetime(2025, 3, 4, 9, 30, tzinfo=SEOUL)


def test_extra_headers_are_added() -> None:
    msg = received(outgoing())
    assert msg["X-Nurture-Sequence"] == "onboarding"
    assert msg["X-Nurture-Step"] == "3"


def test_reply_to_absent_when_not_set() -> None:
    assert "Reply-To" not in received(outgoing(reply_to=""))


def test_international_domain_is_punycoded() -> None:
    msg = received(outgoing(to_email="taro@例え.jp"))
    assert msg["To"].addresses[0].addr_spec == "taro@xn--r8jz45g.jp"
    assert normalize_address("taro@例え.jp") == "taro@xn--r8jz45g.jp"


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"subject": "Hi\r\nBcc: everyone@example.com"}, "OutgoingEmail.subject"),
        ({"to_name": "Eve\nX-Evil: 1"}, "OutgoingEmail.to_name"),
        ({"date": datetime(2025, 3, 4, 9, 30)}, "OutgoingEmail.date must be timezone-aware"),
        ({"to_email": "not-an-address"}, "OutgoingEmail.to_email"),
        ({"to_email": "ユーザー@example.jp"}, "SMTPUTF8"),
        ({"unsubscribe_url": "javascript:alert(1)"}, "OutgoingEmail.unsubscribe_url"),
        ({"unsubscribe_url": "https://x.example/u/a b"}, "OutgoingEmail.unsubscribe_url"),
        ({"message_id": "<no-domain>"}, "OutgoingEmail.message_id"),
        ({"headers": (("Subject", "again"),)}, "cannot be overridden"),
        ({"headers": (("Bad Name", "x"),)}, "not a valid header name"),
        ({"text": "  "}, "OutgoingEmail.text is empty"),
        ({"html": ""}, "OutgoingEmail.html is empty"),
    ],
)
def test_bad_input_names_the_field(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_message(outgoing(**changes))


# ------------------------------------------------------------- same bytes as the stdlib's API


def stdlib_head(email_: OutgoingEmail) -> bytes:
    """The header block the stdlib's own header API writes for ``email_``: build_message
    stores headers pre-folded (for speed) and must emit exactly these bytes."""
    msg = EmailMessage(policy=POLICY)
    msg["From"] = Address(email_.from_name, addr_spec=normalize_address(email_.from_email))
    msg["To"] = Address(email_.to_name, addr_spec=normalize_address(email_.to_email))
    if email_.reply_to:
        msg["Reply-To"] = Address("", addr_spec=email_.reply_to)
    msg["Subject"] = email_.subject
    msg["Date"] = email_.date
    msg["Message-ID"] = email_.message_id
    msg["MIME-Version"] = "1.0"
    built = build_message(email_)
    raw = dict(built.raw_items())
    msg.set_raw("List-Unsubscribe", raw["List-Unsubscribe"])
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for name, value in email_.headers:
        msg[name] = value
    msg.make_alternative(boundary=built.get_boundary())
    return msg.as_bytes(policy=POLICY).split(b"\r\n\r\n", 1)[0]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"to_name": "Alex Smith", "from_name": "Nurture", "subject": "Hello there"},
        {"to_name": "O'Brien, Pat", "subject": "Hi  two spaces, and a tab\there"},
        {"to_name": 'Dr. "Q" (JL) Picard'},  # encoded-word syntax: test_security_headers.py
        {"to_name": "x" * 90, "subject": "y" * 200},
        {"subject": "", "reply_to": ""},
        {"subject": "A long ASCII subject that has to be folded because it goes past the limit"},
        {"to_name": "Zoë Ünal", "subject": "Ünïcödé mixed with a fair amount of ASCII text"},
        {"headers": (("X-Nurture-Step", "한글 값"), ("X-Long", "v " * 60))},
    ],
)
def test_headers_are_the_bytes_the_stdlib_writes(changes: dict[str, object]) -> None:
    email_ = outgoing(**changes)
    head = serialize(build_message(email_)).split(b"\r\n\r\n", 1)[0]
    assert head == stdlib_head(email_)


@pytest.mark.parametrize(
    ("changes"),
    [{}, {"to_name": "x" * 90, "subject": ""}, {"text": "ascii\n", "html": "<p>hi</p>"}],
)
def test_serialize_writes_what_the_generator_writes(changes: dict[str, object]) -> None:
    msg = build_message(outgoing(**changes))
    assert serialize(msg) == msg.as_bytes(policy=POLICY)


def test_serialize_handles_any_other_message() -> None:
    msg = EmailMessage(policy=POLICY)
    msg["Subject"] = "made elsewhere"
    msg.set_content("안녕하세요\n")
    msg.add_alternative("<p>hi</p>", subtype="html")
    msg.preamble = "This is a multi-part message."
    assert serialize(msg) == msg.as_bytes(policy=POLICY)
    assert b"This is a multi-part message." in serialize(msg)


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("short ascii lines\nwith a trailing space \n.\n", "7bit"),
        ("x" * 200 + "\nand = signs\n", "quoted-printable"),
        ("한글 본문입니다 " * 40 + "\n", "base64"),
    ],
)
def test_body_encoding_is_readable_and_decodes_intact(text: str, encoding: str) -> None:
    plain = received(outgoing(text=text)).get_body(("plain",))
    assert plain is not None
    assert plain["Content-Transfer-Encoding"] == encoding
    assert plain.get_content().replace("\r\n", "\n") == text


@pytest.mark.parametrize("sneaky", ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028"])
def test_header_fields_refuse_every_kind_of_line_break(sneaky: str) -> None:
    # The email package writes some of these as a real CRLF: a name could inject headers.
    email = outgoing(to_name=f"A{sneaky}Reply-To: phish@evil.example")
    with pytest.raises(ValueError, match="to_name"):
        build_message(email)
