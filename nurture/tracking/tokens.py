"""Signed tokens for links the engine puts in email (unsubscribe, open pixel, click).

One salt per purpose, so a token made for one purpose is worthless for another.

Tokens are itsdangerous ``URLSafeSerializer`` tokens (HMAC-SHA1, "django-concat" key
derivation) and are verified by itsdangerous. They are *made* here directly, because a
message carries about seven of them and itsdangerous spends most of its ~40 µs per token
on a zlib attempt that never pays off for payloads this small: the token is the same as
itsdangerous makes when it does not compress, and itsdangerous reads it as such.

Tokens are signed with the current key and verified against it and the old ones
(``Settings.token_keys``): rotating the key never breaks a link already delivered."""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Literal

from itsdangerous import BadSignature, URLSafeSerializer

Purpose = Literal["unsubscribe", "open", "click"]
# The keys a token is verified with, current first (one key: that key alone).
Keys = str | Sequence[str]


class BadToken(ValueError):
    """A token that is tampered, truncated, or made for another purpose."""


def _salt(purpose: Purpose) -> str:
    return f"nurture.{purpose}"


@lru_cache(maxsize=64)
def _serializer(keys: tuple[str, ...], purpose: Purpose) -> URLSafeSerializer:
    # itsdangerous signs with the last key and verifies with each, the last first.
    return URLSafeSerializer(list(reversed(keys)), salt=_salt(purpose))


@lru_cache(maxsize=64)
def _signing_key(secret_key: str, purpose: Purpose) -> bytes:
    # itsdangerous' default key derivation ("django-concat" with SHA-1).
    return hashlib.sha1(_salt(purpose).encode() + b"signer" + secret_key.encode()).digest()


# itsdangerous' compact JSON; one encoder, because json.dumps builds one per call when given
# options.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_URL_SAFE = bytes.maketrans(b"+/", b"-_")
_STANDARD = bytes.maketrans(b"-_", b"+/")
# A token as we (and itsdangerous) write it: URL-safe base64 without padding, payload and
# signature; a leading "." marks a payload itsdangerous compressed.
_SHAPE = re.compile(r"\.?[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def _b64(data: bytes) -> bytes:
    """URL-safe base64 without padding, as itsdangerous writes it."""
    return binascii.b2a_base64(data, newline=False).translate(_URL_SAFE).rstrip(b"=")


def _unb64(text: str) -> bytes:
    data = text.encode("ascii").translate(_STANDARD)
    return binascii.a2b_base64(data + b"=" * (-len(data) % 4), strict_mode=True)


def is_canonical(token: str) -> bool:
    """True if ``token`` is spelled exactly as the signer writes it. itsdangerous' decoder
    is lenient (it drops non-ASCII and stray characters, takes padding, ``+`` and ``/``, and
    ignores the unused low bits of the last character), so without this check one token
    had many spellings that verified."""
    if not _SHAPE.fullmatch(token):
        return False
    body, _, signature = token.rpartition(".")
    try:
        # Not secret-dependent (the token is what the client sent): a plain comparison.
        parts = (body.removeprefix("."), signature)
        return all(_b64(_unb64(part)) == part.encode() for part in parts)
    except binascii.Error:
        return False


def sign(secret_key: str, purpose: Purpose, payload: Any) -> str:
    """A URL-safe signed token carrying ``payload`` (JSON data, kept small)."""
    body = _b64(_JSON.encode(payload).encode("utf-8"))
    signature = _b64(hmac.digest(_signing_key(secret_key, purpose), body, "sha1"))
    return (body + b"." + signature).decode("ascii")


def verify(keys: Keys, purpose: Purpose, token: str) -> Any:
    """The payload of a genuine token signed with any of ``keys``, spelled exactly as it
    was signed, or BadToken."""
    if not is_canonical(token):
        raise BadToken(f"invalid {purpose} token")
    ordered = (keys,) if isinstance(keys, str) else tuple(keys)
    try:
        return _serializer(ordered, purpose).loads(token)
    except BadSignature as exc:
        raise BadToken(f"invalid {purpose} token") from exc


def unsubscribe_url(base_url: str, secret_key: str, message_id: int) -> str:
    """The signed one-click unsubscribe URL for one message (RFC 8058)."""
    return f"{base_url.rstrip('/')}/u/{sign(secret_key, 'unsubscribe', {'m': message_id})}"


def open_url(base_url: str, secret_key: str, message_id: int) -> str:
    """The signed open-pixel URL of one message."""
    return f"{base_url.rstrip('/')}/o/{sign(secret_key, 'open', {'m': message_id})}.gif"


def click_url(base_url: str, secret_key: str, message_id: int, position: int) -> str:
    """The signed click URL of link ``position`` of one message."""
    token = sign(secret_key, "click", {"m": message_id, "l": position})
    return f"{base_url.rstrip('/')}/c/{token}"


def message_of(keys: Keys, purpose: Purpose, token: str) -> int:
    """The message id a genuine open or unsubscribe token names, or BadToken."""
    payload = verify(keys, purpose, token)
    if not isinstance(payload, dict) or not _is_id(payload.get("m")):
        raise BadToken(f"malformed {purpose} token")
    return int(payload["m"])


def link_of(keys: Keys, token: str) -> tuple[int, int]:
    """(message id, link position) of a genuine click token, or BadToken."""
    payload = verify(keys, "click", token)
    if not isinstance(payload, dict) or not (_is_id(payload.get("m")) and _is_id(payload.get("l"))):
        raise BadToken("malformed click token")
    return int(payload["m"]), int(payload["l"])


def _is_id(value: Any) -> bool:
    # bool is an int in Python; a signed payload never carries one, but be strict.
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63
