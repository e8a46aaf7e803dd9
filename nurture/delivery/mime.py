"""Build the MIME message a lead receives; sending is the transports' job.

Everything here is a pure function of an ``OutgoingEmail``: the same email built twice gives
the same bytes, so a retried send carries the same Message-ID.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, cast

import css_inline

from nurture.delivery.headers import (
    MAX_LINE,
    POLICY,
    idna_domain,
    normalize_address,
    set_header,
    set_mailbox_header,
)

ONE_CLICK = "List-Unsubscribe=One-Click"

# Headers build_message sets itself; an extra header may not replace or duplicate them.
RESERVED_HEADERS = frozenset(
    {
        "from",
        "sender",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "return-path",
    }
)

# RFC 5322 atext plus dots: what may appear on either side of the @ in a Message-ID.
_ID_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")
# Characters allowed in a URI inside <...> of List-Unsubscribe (RFC 3986 minus "," and "<>").
_URI = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+;=%]+$")
# Fields of OutgoingEmail that become header text; a line break there would inject headers.
_HEADER_FIELDS = (
    "to_email",
    "to_name",
    "from_email",
    "from_name",
    "reply_to",
    "subject",
    "message_id",
    "unsubscribe_url",
    "unsubscribe_mailto",
)


@dataclass(frozen=True, kw_only=True)
class OutgoingEmail:
    """One rendered email, ready to become MIME. Plain data: no I/O, no settings.

    ``html`` is already escaped by the template engine; it is CSS-inlined but never re-escaped.
    ``message_id`` is the full header value as ``make_message_id`` returns it, ``<token@domain>``;
    the bare ``token@domain`` is accepted too. ``unsubscribe_url`` is the signed one-click URL
    (https in production; http is accepted for local development). ``unsubscribe_mailto`` is an
    address (``unsubscribe@example.com``) or a ``mailto:`` URI, or "" for none. ``headers`` are
    extra ``(name, value)`` pairs such as ``("X-Nurture-Sequence", "onboarding")``.
    """

    to_email: str
    to_name: str
    from_email: str
    from_name: str
    reply_to: str = ""
    subject: str
    html: str
    text: str
    message_id: str
    unsubscribe_url: str
    unsubscribe_mailto: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    date: datetime


def make_message_id(token: str, domain: str) -> str:
    """Return the Message-ID ``<token@domain>``; the same token always gives the same id."""
    if not _ID_PART.match(token):
        raise ValueError(
            f"Message-ID token {token!r} must be dot-separated letters, digits "
            "or !#$%&'*+/=?^_`{|}~-"
        )
    ascii_domain = idna_domain(domain, "Message-ID domain")
    if not _ID_PART.match(ascii_domain):
        raise ValueError(f"Message-ID domain {domain!r} is not a valid domain")
    return f"<{token}@{ascii_domain}>"


def build_message(email: OutgoingEmail) -> EmailMessage:
    """Build the multipart/alternative message (text then CSS-inlined HTML) for ``email``."""
    _check_fields(email)
    for name, value in email.headers:
        _check_extra_header(name, value)
    msg = EmailMessage(policy=POLICY)
    # Headers are stored folded (set_raw), as the stdlib would fold them on output: its
    # header objects cost more than the rest of the message (see _header).
    set_mailbox_header(msg, "From", email.from_name, email.from_email, "OutgoingEmail.from_email")
    set_mailbox_header(msg, "To", email.to_name, email.to_email, "OutgoingEmail.to_email")
    if email.reply_to:
        set_mailbox_header(msg, "Reply-To", "", email.reply_to, "OutgoingEmail.reply_to")
    set_header(msg, "Subject", email.subject)
    set_header(msg, "Date", format_datetime(_aware(email.date)))
    set_header(msg, "Message-ID", _message_id(email.message_id))
    set_header(msg, "MIME-Version", "1.0")
    msg.set_raw("List-Unsubscribe", _list_unsubscribe(email))
    set_header(msg, "List-Unsubscribe-Post", ONE_CLICK)
    for name, value in email.headers:
        set_header(msg, name, value)
    msg.set_raw(
        "Content-Type", f'multipart/alternative;\n boundary="{_boundary(email.message_id)}"'
    )
    msg.attach(_text_part(email.text, "plain"))
    msg.attach(_text_part(inline_css(email.html), "html"))
    return msg


def serialize(msg: EmailMessage) -> bytes:
    """Return the wire form of ``msg``: CRLF line ends, ASCII only, lines of at most 998."""
    wire = _wire(msg)
    return wire if wire is not None else msg.as_bytes(policy=POLICY)


# A Content-Type whose boundary parameter needs no parsing to be read.
_SIMPLE_MULTIPART = re.compile(r'multipart/[a-z]+;\s+boundary="([A-Za-z0-9=_.-]+)"\Z')


def _wire(msg: EmailMessage) -> bytes | None:
    """What ``msg.as_bytes(policy=POLICY)`` returns, for the messages build_message makes
    (headers stored folded, text parts in one multipart, all ASCII), written directly: the
    stdlib generator re-parses Content-Type at every level and writes line by line. None for
    any other shape, which the generator handles."""
    if msg.policy is not POLICY or msg.preamble is not None or msg.epilogue is not None:
        return None
    lines = []
    content_type = ""
    for name, value in msg.raw_items():
        if type(value) is not str or not value.isascii():
            return None  # a header object, or text the generator would re-encode
        if name.lower() == "content-type":
            content_type = value
        lines.append(POLICY.fold_binary(name, value))
    lines.append(b"\r\n")
    payload = cast(Any, msg)._payload  # what the generator writes: no decoding, no parsing
    maintype = content_type.partition("/")[0].lower()
    if isinstance(payload, str) and payload.isascii() and maintype == "text":
        lines.append(_crlf(payload).encode("ascii"))
        return b"".join(lines)
    if not isinstance(payload, list) or maintype != "multipart":
        return None
    parts = [_wire(part) if isinstance(part, EmailMessage) else None for part in payload]
    simple = _SIMPLE_MULTIPART.match(content_type)
    boundary = simple.group(1) if simple else msg.get_boundary()
    if not parts or not boundary or not boundary.isascii():
        return None
    delimiter = f"\r\n--{boundary}\r\n".encode("ascii")
    lines.append(delimiter[2:])
    for i, part in enumerate(parts):
        if part is None:
            return None
        lines.append(part if i == 0 else delimiter + part)
    lines.append(delimiter[:-2] + b"--\r\n")
    return b"".join(lines)


def _crlf(text: str) -> str:
    """Every line end as CRLF, as the generator writes lines (\\r\\n, \\r or \\n)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("\n", "\r\n")


def inline_css(html: str) -> str:
    """Copy <style> rules into style="" attributes, keeping the <style> block for media queries."""
    try:
        return _INLINER.inline(html)
    except ValueError as exc:  # css_inline.InlineError is a ValueError
        raise ValueError(f"OutgoingEmail.html: cannot inline CSS: {exc}") from exc


# Remote stylesheets are never fetched at send time: a send must not hang on, or change with,
# a third-party server. <link> tags stay for the clients that load them. The inliner holds
# only these options, so one instance serves every message.
_INLINER = css_inline.CSSInliner(
    keep_style_tags=True, keep_link_tags=True, load_remote_stylesheets=False
)


# Every character str.splitlines() breaks on (the email package writes some of them as a
# CRLF), and the other controls except tab (folding whitespace): none belongs in a header.
_HEADER_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def _check_fields(email: OutgoingEmail) -> None:
    for name in _HEADER_FIELDS:
        value = getattr(email, name)
        if _HEADER_CONTROL.search(value):
            raise ValueError(f"OutgoingEmail.{name} contains a line break or control: {value!r}")
    for name in ("text", "html"):
        if not getattr(email, name).strip():
            raise ValueError(f"OutgoingEmail.{name} is empty; every email needs text and HTML")


def _aware(date: datetime) -> datetime:
    if date.tzinfo is None or date.utcoffset() is None:
        raise ValueError(f"OutgoingEmail.date must be timezone-aware, got naive {date!r}")
    return date


def _message_id(message_id: str) -> str:
    bare = message_id.strip()
    if bare.startswith("<") and bare.endswith(">"):
        bare = bare[1:-1]
    token, at, domain = bare.rpartition("@")
    if not at or not _ID_PART.match(token) or not _ID_PART.match(domain):
        raise ValueError(
            f"OutgoingEmail.message_id {message_id!r} is not <token@domain>; "
            "build it with make_message_id()"
        )
    return f"<{bare}>"


def _list_unsubscribe(email: OutgoingEmail) -> str:
    url = email.unsubscribe_url
    if not url.startswith(("https://", "http://")) or not _URI.match(url):
        raise ValueError(
            f"OutgoingEmail.unsubscribe_url must be an https URL without spaces, commas or <>, "
            f"got {url!r}"
        )
    entries = [f"<{url}>"]
    if email.unsubscribe_mailto:
        entries.append(f"<{_mailto(email.unsubscribe_mailto)}>")
    # One entry per line: a folded line break may only sit between entries, never in a URI.
    return ",\n ".join(entries)


def _mailto(value: str) -> str:
    uri = value if value.lower().startswith("mailto:") else f"mailto:{value}"
    address = uri[len("mailto:") :].split("?", 1)[0]
    normalize_address(address, "OutgoingEmail.unsubscribe_mailto")
    if not _URI.match(uri):
        raise ValueError(
            f"OutgoingEmail.unsubscribe_mailto {value!r} has characters not allowed in a URI"
        )
    return uri


def _check_extra_header(name: str, value: str) -> None:
    if not _HEADER_NAME.match(name):
        raise ValueError(f"OutgoingEmail.headers: {name!r} is not a valid header name")
    if name.lower() in RESERVED_HEADERS:
        raise ValueError(
            f"OutgoingEmail.headers: {name!r} is set by build_message and cannot be overridden"
        )
    if _HEADER_CONTROL.search(value):
        raise ValueError(f"OutgoingEmail.headers: value of {name!r} contains a line break")


def _boundary(message_id: str) -> str:
    # Derived from the Message-ID so a rebuilt email is byte-for-byte identical; a hex digest
    # cannot occur in quoted-printable or base64 body lines by accident.
    return "=_nurture_" + hashlib.sha256(message_id.encode()).hexdigest()[:32]


def _text_part(content: str, subtype: str) -> EmailMessage:
    part = EmailMessage(policy=POLICY)
    encoding, payload = _encode_body(content)
    part.set_raw("Content-Type", f'text/{subtype}; charset="utf-8"')
    part.set_raw("Content-Transfer-Encoding", encoding)
    part.set_payload(payload)
    return part


def _encode_body(content: str) -> tuple[str, str]:
    """(Content-Transfer-Encoding, body) as ``set_content`` chooses them under POLICY: 7bit if
    every line is short ASCII, else the shorter of quoted-printable and base64; encoded with
    binascii (C) rather than the stdlib's pure-Python quoted-printable."""
    lines = content.encode("utf-8").splitlines()
    normal = b"\n".join(lines) + b"\n"
    if normal.isascii() and max(len(line) for line in lines) <= MAX_LINE:
        return "7bit", normal.decode("ascii")
    quoted = binascii.b2a_qp(normal)  # soft line breaks keep lines within 76 characters
    embedded = b"\r\n".join(lines) + b"\r\n"
    # base64 is 4/3 of the data plus a line end every 76 characters.
    if len(quoted) <= (len(embedded) + 2) // 3 * 4 * 77 // 76:
        return "quoted-printable", quoted.decode("ascii")
    return "base64", base64.encodebytes(embedded).decode("ascii")
