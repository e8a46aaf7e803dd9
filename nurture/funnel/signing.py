"""Webhook signatures: HMAC-SHA256 over the timestamp and the raw body (pure).

Headers sent with every hand-off webhook::

    X-Nurture-Timestamp: 1767607200
    X-Nurture-Signature: sha256=<hex of HMAC-SHA256(secret, "<timestamp>." + body)>

The timestamp is inside the signed text, so a captured request cannot be replayed later
with a fresh timestamp; receivers refuse timestamps older than a few minutes."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

SIGNATURE_HEADER = "X-Nurture-Signature"
TIMESTAMP_HEADER = "X-Nurture-Timestamp"
EVENT_HEADER = "X-Nurture-Event"
DELIVERY_HEADER = "X-Nurture-Delivery"
# How old a signed request may be when it arrives (clock skew plus transit).
DEFAULT_TOLERANCE_SECONDS = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<hex>`` for ``body`` sent at ``timestamp`` (Unix seconds)."""
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signed_headers(secret: str, body: bytes, now: datetime) -> dict[str, str]:
    """The timestamp and signature headers for ``body`` sent at ``now``."""
    timestamp = int(now.timestamp())
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }


def verify(
    secret: str,
    body: bytes,
    timestamp: str,
    sent_signature: str,
    now: datetime | None = None,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """True if ``sent_signature`` signs ``body`` at ``timestamp`` and the timestamp is
    within ``tolerance_seconds`` of ``now`` (default: the current time); what a receiver
    runs, the comparison takes constant time."""
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    now = now if now is not None else datetime.now(UTC)
    if abs(now.timestamp() - sent_at) > tolerance_seconds:
        return False
    return hmac.compare_digest(signature(secret, sent_at, body), sent_signature.strip())
