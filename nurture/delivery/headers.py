"""Header fields written so that they read back as exactly what was meant.

The standard library decodes encoded words (=?utf-8?b?...?=) while it folds a header, so
text from lead data could become a Bcc or a second recipient after any check on the text.
Every header is folded, parsed back the way a receiving client would, and used only if it
reads as the literal text (or as exactly one mailbox); otherwise it is written as our own
UTF-8 encoded words (RFC 2047)."""

from __future__ import annotations

import base64
import email.errors
import email.policy
import re
from email.headerregistry import Address, BaseHeader, Group, HeaderRegistry
from email.message import EmailMessage
from functools import lru_cache
from typing import cast


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


# A header value the stdlib would emit unchanged when it fits on one line: printable ASCII
# words separated by single spaces (anything else is folded by the stdlib itself).
_PLAIN_VALUE = re.compile(r"[!-~]+(?: [!-~]+)*\Z")


def normalize_address(address: str, place: str = "address") -> str:
    """Return ``address`` with an ASCII (IDNA) domain; reject what needs SMTPUTF8."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"{place}: {address!r} is not an email address (missing local@domain)")
    if not local.isascii():
        raise ValueError(
            f"{place}: {address!r} has a non-ASCII local part, which needs SMTPUTF8 (not supported)"
        )
    return f"{local}@{idna_domain(domain, place)}"


def set_header(msg: EmailMessage, name: str, value: str) -> None:
    """Add an unstructured header (Subject, extras) already folded, so serializing emits it
    as it is."""
    if _is_plain(name, value):
        msg.set_raw(name, value)  # the stdlib's folding would leave it exactly so
        return
    _store(msg, name, value, _folded(name, value))


def set_mailbox_header(
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


def idna_domain(domain: str, place: str) -> str:
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
