"""Webhook signatures: HMAC-SHA256 over the timestamp, the delivery id, the event and the
raw body (pure).

Headers sent with every hand-off webhook::

    X-Nurture-Timestamp: 1767607200
    X-Nurture-Delivery: 17
    X-Nurture-Event: handoff.mql
    X-Nurture-Signature: v1=<hex of HMAC-SHA256(secret, signed text)>

The signed text (scheme ``v1``) is ``"v1\\n<timestamp>\\n<delivery>\\n<event>\\n"`` followed
by the raw body. Everything a receiver relies on is in it: the timestamp (a captured
request cannot be replayed later with a fresh one), the delivery id (nor replayed now under
another id, past the receiver's dedupe) and the event. The fields are separated by line
breaks because no header value can hold one (event names hold dots), so no bytes can move
from one field to the next. ``v1=`` names the scheme, so receivers can tell a later one."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import UTC, datetime

SIGNATURE_HEADER = "X-Nurture-Signature"
TIMESTAMP_HEADER = "X-Nurture-Timestamp"
EVENT_HEADER = "X-Nurture-Event"
DELIVERY_HEADER = "X-Nurture-Delivery"
SCHEME = "v1"
# How far a signed request's timestamp may be from the receiver's clock, either way (clock
# skew plus transit).
DEFAULT_TOLERANCE_SECONDS = 300
# What well-formed headers look like; anything else is refused before any arithmetic.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_DELIVERY = re.compile(r"[0-9]{1,20}")
_EVENT = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
_SIGNATURE = re.compile(rf"{SCHEME}=[0-9a-f]{{64}}")


def signed_text(timestamp: int, delivery: str, event: str, body: bytes) -> bytes:
    """What the signature covers (scheme v1)."""
    return f"{SCHEME}\n{timestamp}\n{delivery}\n{event}\n".encode() + body


def signature(secret: str, timestamp: int, delivery: str, event: str, body: bytes) -> str:
    """``v1=<hex>`` for ``body`` sent as ``delivery`` of ``event`` at ``timestamp``."""
    text = signed_text(timestamp, delivery, event, body)
    return f"{SCHEME}={hmac.new(secret.encode(), text, hashlib.sha256).hexdigest()}"


def signed_headers(
    secret: str, body: bytes, now: datetime, *, delivery: str, event: str
) -> dict[str, str]:
    """The four headers of ``body``, sent as ``delivery`` of ``event`` at ``now``."""
    timestamp = int(now.timestamp())
    return {
        TIMESTAMP_HEADER: str(timestamp),
        DELIVERY_HEADER: delivery,
        EVENT_HEADER: event,
        SIGNATURE_HEADER: signature(secret, timestamp, delivery, event, body),
    }


def verify(
    secret: str,
    body: bytes,
    headers: Mapping[str, str],
    now: datetime | None = None,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """True if ``headers`` (names in any case) sign ``body`` with ``secret`` and their
    timestamp is within ``tolerance_seconds`` of ``now`` (default: the current time).
    What a receiver runs: anything malformed is False, never an exception, and the
    signatures are compared in constant time."""
    try:
        fields = _fields(headers)
        if fields is None or not secret or not isinstance(body, bytes):
            return False
        stamp, delivery, event, sent = fields
        at = (now if now is not None else datetime.now(UTC)).timestamp()
        if abs(at - int(stamp)) > tolerance_seconds:
            return False
        expected = signature(secret, int(stamp), delivery, event, body)
        return hmac.compare_digest(expected, sent)
    except (AttributeError, TypeError, ValueError, OverflowError):  # not headers, not a time
        return False


_FORMS = {
    TIMESTAMP_HEADER: _TIMESTAMP,
    DELIVERY_HEADER: _DELIVERY,
    EVENT_HEADER: _EVENT,
    SIGNATURE_HEADER: _SIGNATURE,
}


def _fields(headers: Mapping[str, str]) -> tuple[str, str, str, str] | None:
    """(timestamp, delivery, event, signature) if all four are there and well formed."""
    given = {str(name).lower(): value for name, value in headers.items()}
    found = [given.get(name.lower()) for name in _FORMS]
    for value, form in zip(found, _FORMS.values(), strict=True):
        if not isinstance(value, str) or form.fullmatch(value) is None:
            return None
    stamp, delivery, event, sent = (str(value) for value in found)
    return stamp, delivery, event, sent
