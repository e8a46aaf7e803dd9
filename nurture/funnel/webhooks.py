"""Delivering queued notifications: claimed so two passes never post the same one, signed,
posted outside any transaction, every attempt recorded, retried with backoff until they
succeed or run out of attempts."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from nurture.core.clock import Clock
from nurture.db.models import (
    WebhookAttempt,
    WebhookDelivery,
)
from nurture.db.session import transaction
from nurture.funnel.notifications import TargetSecret, secret_for
from nurture.funnel.signing import DELIVERY_HEADER, EVENT_HEADER, signed_headers
from nurture.sequences.timing import retry_backoff
from nurture.settings import Settings

log = logging.getLogger(__name__)
# Posts one webhook: (url, body, headers, timeout) -> (HTTP status or None, error text).
Poster = Callable[[str, bytes, dict[str, str], float], tuple[int | None, str]]

# A claimed delivery whose process vanished is tried again after this lease.
CLAIM_LEASE = timedelta(minutes=5)


# One pass delivers at most this many, for at most this long (the rest wait for the next
# pass): POSTs run inline, and a slow receiver must not hold up sending.
DELIVERIES_PER_PASS = 20


PASS_SECONDS = 5.0


# Receiver answers worth retrying; any other 4xx means the request itself is refused.
RETRYABLE_CODES = frozenset({408, 409, 425, 429})


USER_AGENT = "Nurture-Webhook/1"


@dataclass
class DeliveryReport:
    """What one pass did."""

    delivered: int = 0
    retried: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Claimed:
    id: int
    url: str
    event: str
    payload: dict[str, Any]
    attempt: int
    kind: str = "webhook"


def deliver_due(
    sessions: sessionmaker[Session],
    settings: Settings,
    now: datetime,
    *,
    max_attempts: int,
    post: Poster | None = None,
    limit: int = DELIVERIES_PER_PASS,
    budget_seconds: float = PASS_SECONDS,
    clock: Clock | None = None,
    secrets: Mapping[str, TargetSecret] | None = None,
) -> DeliveryReport:
    """Claim due deliveries, POST them (outside any transaction), record every attempt.
    At most ``limit`` per pass, and none started after ``budget_seconds``: the rest are
    released for the next pass. Each POST is signed at ``clock()`` when it is sent (by
    default ``now`` plus the time the pass has taken), with its target's own secret
    (``secrets``, by URL) or NURTURE_WEBHOOK_SECRET."""
    report = DeliveryReport()
    started = time.monotonic()
    clock = clock or (lambda: now + timedelta(seconds=time.monotonic() - started))
    token, claimed = _claim(sessions, now, limit)
    sender = post or http_post
    for index, item in enumerate(claimed):
        if time.monotonic() - started > budget_seconds:
            _release(sessions, token, [c.id for c in claimed[index:]], now)
            break
        signer = secret_for(item.url, settings, secrets or {})
        _deliver_one(
            sessions, settings, item, token, sender, clock, max_attempts, now, report, signer
        )
    return report


def _deliver_one(
    sessions: sessionmaker[Session],
    settings: Settings,
    item: _Claimed,
    token: str,
    sender: Poster,
    clock: Clock,
    max_attempts: int,
    now: datetime,
    report: DeliveryReport,
    signer: tuple[str, str],
) -> None:
    body = json.dumps(item.payload, ensure_ascii=False, separators=(",", ":")).encode()
    secret, refusal = signer
    if item.kind == "webhook" and refusal:
        code, error, elapsed = None, refusal, 0  # refused here: nothing is sent
        log.error("webhook %s to %s not sent: %s", item.id, item.url, refusal)
    else:
        # Slack targets are signed with NURTURE_WEBHOOK_SECRET when there is one (harmless).
        key = secret if item.kind == "webhook" else settings.webhook_secret
        headers = _headers(item, body, clock(), key)
        sent_at = time.monotonic()
        code, error = sender(item.url, body, headers, settings.webhook_timeout)
        elapsed = int((time.monotonic() - sent_at) * 1000)
    with transaction(sessions) as session:
        refused = item.kind == "webhook" and bool(refusal)
        final = max_attempts if refused else item.attempt  # no retry can help
        _record(session, item, token, code, error, elapsed, max_attempts, now, report, final)


def _release(sessions: sessionmaker[Session], token: str, ids: list[int], now: datetime) -> None:
    """Give claimed deliveries back untried: due again at once, the attempt not counted."""
    with transaction(sessions) as session:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(ids), WebhookDelivery.claim_token == token)
            .values(
                status="pending",
                claim_token=None,
                next_attempt_at=now,
                attempts=WebhookDelivery.attempts - 1,
            )
        )


def _headers(item: _Claimed, body: bytes, at: datetime, secret: str) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_HEADER: item.event,
        DELIVERY_HEADER: str(item.id),
    }
    if secret:
        # The delivery id and event are signed too: receivers dedupe and route by them.
        headers.update(signed_headers(secret, body, at, delivery=str(item.id), event=item.event))
    return headers


def _claim(
    sessions: sessionmaker[Session], now: datetime, limit: int
) -> tuple[str, list[_Claimed]]:
    token = str(uuid.uuid4())
    due = (
        WebhookDelivery.status.in_(("pending", "sending")),
        WebhookDelivery.next_attempt_at <= now,
    )
    with transaction(sessions) as session:
        query = select(WebhookDelivery.id).where(*due).order_by(WebhookDelivery.next_attempt_at)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        ids = list(session.scalars(query.limit(limit)))
        if not ids:
            return token, []
        # A conditional UPDATE is the claim: a row another pass took no longer matches.
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(ids), *due)
            .values(
                status="sending",
                claim_token=token,
                next_attempt_at=now + CLAIM_LEASE,
                attempts=WebhookDelivery.attempts + 1,
            )
        )
        rows = session.scalars(
            select(WebhookDelivery).where(
                WebhookDelivery.id.in_(ids), WebhookDelivery.claim_token == token
            )
        )
        claimed = [
            _Claimed(r.id, r.target_url, r.event, dict(r.payload), r.attempts, r.target_kind)
            for r in rows
        ]
    return token, sorted(claimed, key=lambda c: c.id)


def _record(
    session: Session,
    item: _Claimed,
    token: str,
    code: int | None,
    error: str,
    elapsed_ms: int,
    max_attempts: int,
    now: datetime,
    report: DeliveryReport,
    attempt: int | None = None,
) -> None:
    """Record one attempt (``attempt``: count it as this one, for the retry decision)."""
    delivery = session.get(WebhookDelivery, item.id)
    if delivery is None or delivery.claim_token != token:
        return  # the lease ran out and another pass took it over
    ok = code is not None and 200 <= code < 300
    permanent = code is not None and 400 <= code < 500 and code not in RETRYABLE_CODES
    if ok:
        status = "delivered"
    elif permanent or (attempt or item.attempt) >= max_attempts:
        status = "failed"
    else:
        status = "retry"
    session.add(
        WebhookAttempt(
            delivery_id=item.id,
            attempt=item.attempt,
            at=now,
            status=status,
            response_code=code,
            error=error[:2000],
            duration_ms=elapsed_ms,
        )
    )
    _settle(delivery, status, error, now, report)


def _settle(
    delivery: WebhookDelivery, status: str, error: str, now: datetime, report: DeliveryReport
) -> None:
    delivery.claim_token = None
    delivery.last_error = error[:2000]
    if status == "delivered":
        delivery.status, delivery.delivered_at, delivery.next_attempt_at = "delivered", now, None
        report.delivered += 1
    elif status == "failed":
        delivery.status, delivery.next_attempt_at = "failed", None
        report.failed += 1
        report.errors.append(f"delivery {delivery.id} to {delivery.target_url}: {error}")
        log.warning("webhook %s to %s failed for good: %s", delivery.id, delivery.target_url, error)
    else:
        delivery.status = "pending"
        delivery.next_attempt_at = now + retry_backoff(delivery.attempts)
        report.retried += 1


def http_post(
    url: str, body: bytes, headers: dict[str, str], timeout: float
) -> tuple[int | None, str]:
    """POST ``body``; (status code, error text). Never raises: a failure is data."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), ""
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, f"{type(exc).__name__}: {reason}"


def deliveries_of(session: Session, handoff_ids: Sequence[int]) -> list[WebhookDelivery]:
    query = select(WebhookDelivery).where(WebhookDelivery.handoff_id.in_(handoff_ids))
    return list(session.scalars(query.order_by(WebhookDelivery.id)))
