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
