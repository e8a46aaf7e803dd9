"""Build the MIME message a lead receives; sending is the transports' job.

Everything here is a pure function of an ``OutgoingEmail``: the same email built twice gives
the same bytes, so a retried send carries the same Message-ID.
"""

from __future__ import annotations

import base64
import binascii
import email.errors
import email.policy
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address, BaseHeader, Group, HeaderRegistry
from email.message import EmailMessage
from email.utils import format_datetime
from functools import lru_cache
from typing import Any, cast

import css_inline


class _CachedHeaderRegistry(HeaderRegistry):
    """The stdlib registry creates a new header class on every lookup (dozens per message);
    those classes are interchangeable, so one per header name is kept."""

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}

    def map_to_type(self, name: str, cls: type[BaseHeader]) -> None:
        super().map_to_type(name, cls)
        self._classes.clear()

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        found = self._classes.get(key)
        if found is None:
            found = self._classes[key] = super().__getitem__(name)
        return found


# email.policy.SMTP (CRLF, RFC 2047 headers) with two changes:
# - cte_type="7bit": bodies get quoted-printable/base64 when needed, so every byte on the wire
#   is ASCII and no line exceeds 78 characters (no reliance on the server's 8BITMIME, and
#   css_inline's one-line HTML cannot break the 998-character SMTP limit).
# - refold_source="none": headers stored raw (List-Unsubscribe) are emitted as we folded them.
#   The stdlib would otherwise turn a long signed URL into RFC 2047 encoded-words, which no
#   mail client decodes inside List-Unsubscribe.
POLICY = email.policy.SMTP.clone(
    cte_type="7bit", refold_source="none", header_factory=_CachedHeaderRegistry()
)
MAX_LINE = 78  # POLICY.max_line_length

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
# A header value the stdlib would emit unchanged when it fits on one line: printable ASCII
# words separated by single spaces (anything else is folded by the stdlib itself).
_PLAIN_VALUE = re.compile(r"[!-~]+(?: [!-~]+)*\Z")
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
    ascii_domain = _idna(domain, "Message-ID domain")
    if not _ID_PART.match(ascii_domain):
        raise ValueError(f"Message-ID domain {domain!r} is not a valid domain")
    return f"<{token}@{ascii_domain}>"


def normalize_address(address: str, place: str = "address") -> str:
    """Return ``address`` with an ASCII (IDNA) domain; reject what needs SMTPUTF8."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"{place}: {address!r} is not an email address (missing local@domain)")
    if not local.isascii():
        raise ValueError(
            f"{place}: {address!r} has a non-ASCII local part, which needs SMTPUTF8 (not supported)"
        )
    return f"{local}@{_idna(domain, place)}"


def build_message(email: OutgoingEmail) -> EmailMessage:
    """Build the multipart/alternative message (text then CSS-inlined HTML) for ``email``."""
    _check_fields(email)
    for name, value in email.headers:
        _check_extra_header(name, value)
    msg = EmailMessage(policy=POLICY)
    # Headers are stored folded (set_raw), as the stdlib would fold them on output: its
    # header objects cost more than the rest of the message (see _header).
    _mailbox_header(msg, "From", email.from_name, email.from_email, "OutgoingEmail.from_email")
    _mailbox_header(msg, "To", email.to_name, email.to_email, "OutgoingEmail.to_email")
    if email.reply_to:
        _mailbox_header(msg, "Reply-To", "", email.reply_to, "OutgoingEmail.reply_to")
    _header(msg, "Subject", email.subject)
    _header(msg, "Date", format_datetime(_aware(email.date)))
    _header(msg, "Message-ID", _message_id(email.message_id))
    _header(msg, "MIME-Version", "1.0")
    msg.set_raw("List-Unsubscribe", _list_unsubscribe(email))
    _header(msg, "List-Unsubscribe-Post", ONE_CLICK)
    for name, value in email.headers:
        _header(msg, name, value)
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


def _header(msg: EmailMessage, name: str, value: str) -> None:
    """Add an unstructured header (Subject, extras) already folded, so serializing emits it
    as it is."""
    if _is_plain(name, value):
        msg.set_raw(name, value)  # the stdlib's folding would leave it exactly so
        return
    _store(msg, name, value, _folded(name, value))


def _mailbox_header(
    msg: EmailMessage, name: str, display_name: str, address: str, place: str
) -> None:
    """Add From, To or Reply-To: exactly one mailbox, whatever its display name holds."""
    mailbox = _address(display_name, address, place)
    value = str(mailbox)  # the display name quoted when it holds specials ("a, b" <x@y>)
    if _is_plain(name, value):
        msg.set_raw(name, value)
        return
    _store(msg, name, value, _folded_mailbox(name, mailbox.display_name, mailbox.addr_spec))


def _is_plain(name: str, value: str) -> bool:
    """Printable ASCII on one line, without encoded-word syntax: read as it is written."""
    fits = len(name) + 2 + len(value) <= MAX_LINE
    return fits and "=?" not in value and _PLAIN_VALUE.match(value) is not None


def _store(msg: EmailMessage, name: str, value: str, folded: str | None) -> None:
    if folded is None:  # the stdlib's own header object folds to the same bytes on output
        msg[name] = value
    else:
        msg.set_raw(name, folded)


# The stdlib decodes the RFC 2047 encoded words it finds in the text it is asked to fold: a
# subject or display name holding "=?utf-8?b?...?=" came out decoded, its CRLF written as
# real header lines (CPython 3.11 and 3.12) and its commas as extra recipients (every
# version). Such text is encoded here instead, and what the stdlib folds is read back, as
# email.message_from_bytes(policy=email.policy.default) reads it, before it is used.
_READER = email.policy.default


@lru_cache(maxsize=1024)
def _folded(name: str, value: str) -> str | None:
    """``value`` folded (RFC 2047 encoded words, line breaks), without the ``Name: `` label
    and the final line end, such that it reads back exactly as ``value``; cached, as sender
    and fixed headers repeat. None when the stdlib's folding, which is kept whenever it
    reads back right, starts on a continuation line (or the value is empty): ``set_raw``
    cannot write that byte for byte."""
    if "=?" not in value:
        folded = _stdlib_fold(name, value)
        # Started on a continuation line, the text reads back after the folding's space.
        if _reads_back(folded) in (value, f" {value}"):
            return _unlabelled(name, folded)
    folded = f"{name}: " + "\n ".join(_encoded_words(value, MAX_LINE - len(name) - 2))
    if _reads_back(folded) != value:
        raise ValueError(f"OutgoingEmail: the {name} header cannot be written as {value!r}")
    return _unlabelled(name, folded)


@lru_cache(maxsize=1024)
def _folded_mailbox(name: str, display_name: str, addr_spec: str) -> str | None:
    """``_folded`` for one mailbox: one address, ``addr_spec``, whatever the display name
    holds. A name of plain words is folded by the stdlib if that reads back exactly; any
    other is written as encoded words here, the stdlib's folder being wrong for some: it
    decodes encoded-word syntax in a name, and breaks a long quoted name with a comma into
    two addresses."""
    if not display_name:
        return addr_spec  # an address cannot be folded
    if _WORDS.match(display_name) and "=?" not in display_name:
        folded = _stdlib_fold(name, f"{display_name} <{addr_spec}>")
        if _reads_as_mailbox(folded, display_name, addr_spec):
            return _unlabelled(name, folded)
    # Encoded words hold no specials and no spaces, so they can only read as one phrase.
    words = _encoded_words(display_name, MAX_LINE - len(name) - 2)
    last_line = len(words[-1]) + (len(name) + 2 if len(words) == 1 else 1)
    if last_line + len(addr_spec) + 3 <= MAX_LINE:
        words[-1] += f" <{addr_spec}>"
    else:
        words.append(f"<{addr_spec}>")
    return "\n ".join(words)


# A display name of atoms only (RFC 5322 atext, single spaces): no quoting, no encoding.
_WORDS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")


def _stdlib_fold(name: str, value: str) -> str:
    return cast(str, POLICY.header_factory(name, value).fold(policy=POLICY))


def _unlabelled(name: str, folded: str) -> str | None:
    label = f"{name}: "
    if not folded.startswith(label):
        return None
    return folded[len(label) :].removesuffix(POLICY.linesep)


def _read_back(folded: str) -> BaseHeader | None:
    """The header a mail client's parser makes of ``Name: folded-text``; None if it fails."""
    try:
        name, raw = _READER.header_source_parse(folded.splitlines(keepends=True))
        return cast(BaseHeader, _READER.header_fetch_parse(name, raw))
    except (ValueError, email.errors.HeaderParseError):
        return None


def _reads_back(folded: str) -> str | None:
    header = _read_back(folded)
    return None if header is None or header.defects else str(header)


def _reads_as_mailbox(folded: str, display_name: str, addr_spec: str) -> bool:
    header = _read_back(folded)
    groups: tuple[Group, ...] = getattr(header, "groups", ())
    if header is None or header.defects or len(groups) != 1 or groups[0].display_name:
        return False
    read = groups[0].addresses
    return len(read) == 1 and (read[0].display_name, read[0].addr_spec) == (display_name, addr_spec)


MAX_ENCODED_WORD = 75  # RFC 2047: an encoded word is at most 75 characters long
_EW_OVERHEAD = len("=?utf-8?q??=")
# What Q encoding may leave as it is in a display name (RFC 2047, 5(3)): safe in any header.
_Q_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")


def _encoded_words(text: str, first: int) -> list[str]:
    """``text`` as UTF-8 encoded words of whole characters, Q or base64, the first at most
    ``first`` characters long and the others at most 75. Decoded and concatenated (RFC 2047
    drops the folding between them) they are ``text``."""
    quoted = [_q(char) for char in text]
    # The stdlib's choice (email._encoded_words.encode): Q unless base64 is 5 shorter.
    use_q = sum(map(len, quoted)) - (len(text.encode()) + 2) // 3 * 4 < 5
    words: list[str] = []
    start = size = 0
    budget = first - _EW_OVERHEAD
    for i, char in enumerate(text):
        grown = size + (len(quoted[i]) if use_q else len(char.encode()))
        if i > start and (grown if use_q else (grown + 2) // 3 * 4) > budget:
            words.append(_encoded_word(text[start:i], use_q))
            start, grown, budget = i, grown - size, MAX_ENCODED_WORD - _EW_OVERHEAD
        size = grown
    words.append(_encoded_word(text[start:], use_q))
    return words


def _q(char: str) -> str:
    if char in _Q_PLAIN:
        return char
    return "_" if char == " " else "".join(f"={byte:02X}" for byte in char.encode())


def _encoded_word(chunk: str, use_q: bool) -> str:
    if use_q:
        return "=?utf-8?q?" + "".join(map(_q, chunk)) + "?="
    return "=?utf-8?b?" + base64.b64encode(chunk.encode()).decode("ascii") + "?="


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


def _idna(domain: str, place: str) -> str:
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"{place}: domain {domain!r} cannot be IDNA-encoded: {exc}") from exc


@lru_cache(maxsize=1024)
def _address(display_name: str, address: str, place: str) -> Address:
    addr_spec = normalize_address(address, place)
    if "=?" in addr_spec:  # RFC 2047 forbids encoded words there; the stdlib decodes them
        raise ValueError(f"{place}: {address!r} holds encoded-word syntax (=?...?=)")
    try:
        mailbox = Address(display_name=display_name, addr_spec=addr_spec)
    except (ValueError, email.errors.HeaderParseError) as exc:
        raise ValueError(f"{place}: {address!r} is not a valid email address: {exc}") from exc
    # The header must name the mailbox the envelope goes to: no comments, no stray quoting.
    if mailbox.addr_spec != addr_spec:
        raise ValueError(f"{place}: {address!r} is not a plain address; write {mailbox.addr_spec}")
    return mailbox


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
