"""Signed tokens for links the engine puts in email (unsubscribe, open pixel, click).

One salt per purpose, so a token made for one purpose is worthless for another."""

from __future__ import annotations

from typing import Any, Literal

from itsdangerous import BadSignature, URLSafeSerializer

Purpose = Literal["unsubscribe", "open", "click"]


class BadToken(ValueError):
    """A token that is tampered, truncated, or made for another purpose."""


def _serializer(secret_key: str, purpose: Purpose) -> URLSafeSerializer:
    return URLSafeSerializer(secret_key, salt=f"nurture.{purpose}")


def sign(secret_key: str, purpose: Purpose, payload: Any) -> str:
    """A URL-safe signed token carrying ``payload`` (JSON data, kept small)."""
    return _serializer(secret_key, purpose).dumps(payload)


def verify(secret_key: str, purpose: Purpose, token: str) -> Any:
    """The payload of a genuine token, or BadToken."""
    try:
        return _serializer(secret_key, purpose).loads(token)
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


def message_of(secret_key: str, purpose: Purpose, token: str) -> int:
    """The message id a genuine open or unsubscribe token names, or BadToken."""
    payload = verify(secret_key, purpose, token)
    if not isinstance(payload, dict) or not _is_id(payload.get("m")):
        raise BadToken(f"malformed {purpose} token")
    return int(payload["m"])


def link_of(secret_key: str, token: str) -> tuple[int, int]:
    """(message id, link position) of a genuine click token, or BadToken."""
    payload = verify(secret_key, "click", token)
    if not isinstance(payload, dict) or not (_is_id(payload.get("m")) and _is_id(payload.get("l"))):
        raise BadToken("malformed click token")
    return int(payload["m"]), int(payload["l"])


def _is_id(value: Any) -> bool:
    # bool is an int in Python; a signed payload never carries one, but be strict.
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63
