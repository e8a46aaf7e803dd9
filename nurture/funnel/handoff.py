"""Hand-offs to sales: the context document, and its delivery as signed webhooks.

A hand-off opens when a lead reaches a stage where it waits for sales (an MQL to accept,
an SAL to qualify). On MQL and on a fast track, the context (why it qualified, its score,
what it read, what it was sent, its stage history, its owner) is queued for every target
in the same transaction as the stage change (an outbox): nothing is sent inside an API
request. The engine's pass (:func:`deliver_due`) claims due deliveries, POSTs them with a
timeout, and records every attempt; failures are retried with backoff."""

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

from nurture.core.vocabulary import SITE_EVENTS
from nurture.db.models import (
    Event,
    Handoff,
    Lead,
    Message,
    StageChange,
    WebhookAttempt,
    WebhookDelivery,
)
from nurture.db.session import transaction
from nurture.funnel.signing import DELIVERY_HEADER, EVENT_HEADER, signed_headers
from nurture.funnel.spec import Handoff as HandoffSpec
from nurture.sequences.timing import retry_backoff
from nurture.settings import Settings

log = logging.getLogger(__name__)

# Hand-offs that notify sales when they open (an SAL or SQL only starts an SLA clock).
NOTIFY_KINDS = ("mql", "fast_track")
# A claimed delivery whose process vanished is tried again after this lease.
CLAIM_LEASE = timedelta(minutes=5)
# One pass delivers at most this many, for at most this long (the rest wait for the next
# pass): POSTs run inline, and a slow receiver must not hold up sending.
DELIVERIES_PER_PASS = 20
PASS_SECONDS = 5.0
NO_SECRET = (
    "NURTURE_WEBHOOK_SECRET is not set: hand-off webhooks are never sent unsigned "
    "(set it, or remove the webhook targets)"
)
# Receiver answers worth retrying; any other 4xx means the request itself is refused.
RETRYABLE_CODES = frozenset({408, 409, 425, 429})
USER_AGENT = "Nurture-Webhook/1"
# Events whose data carries the content the lead engaged with.
CONTENT_EVENTS = ("clicked", *SITE_EVENTS)

Poster = Callable[[str, bytes, dict[str, str], float], tuple[int | None, str]]
Clock = Callable[[], datetime]


# -- hand-offs ----------------------------------------------------------------------------


def open_handoff(
    session: Session,
    lead: Lead,
    *,
    stage: str,
    kind: str,
    priority: str,
    due_at: datetime | None,
    owner: str,
    now: datetime,
    flush: bool = True,
) -> Handoff:
    """Start the SLA clock of a lead waiting for sales in ``stage`` (``flush``: write it
    now, so it has its id)."""
    handoff = Handoff(
        lead_id=lead.id,
        kind=kind,
        stage=stage,
        priority=priority,
        opened_at=now,
        due_at=due_at,
        owner=owner,
        cycle=lead.cycle,
        outcome="",
    )
    session.add(handoff)
    if flush:
        session.flush()
    return handoff


def open_handoffs(session: Session, lead_id: int) -> list[Handoff]:
    return open_handoffs_of(session, [lead_id])


def open_handoffs_of(session: Session, lead_ids: Sequence[int]) -> list[Handoff]:
    """The open hand-offs of these leads, oldest first."""
    query = select(Handoff).where(Handoff.lead_id.in_(lead_ids), Handoff.closed_at.is_(None))
    return list(session.scalars(query.order_by(Handoff.id)))


def close_handoffs(
    session: Session,
    lead_id: int,
    outcome: str,
    now: datetime,
    *,
    open_ones: Sequence[Handoff] | None = None,
) -> list[Handoff]:
    """Close the lead's open hand-offs: sales acted (or the lead moved on) at ``now``.
    ``open_ones``: those hand-offs, when the caller read them already."""
    closed = list(open_ones) if open_ones is not None else open_handoffs(session, lead_id)
    for handoff in closed:
        handoff.closed_at = now
        handoff.outcome = outcome
    return closed


# -- the context document -----------------------------------------------------------------


def build_context(
    session: Session,
    lead: Lead,
    handoff: Handoff,
    why: dict[str, Any],
    recent: int,
    base_url: str,
) -> dict[str, Any]:
    """Everything sales needs to call the lead warm: who, why, what it read, what it got."""
    return {
        "handoff": handoff_json(handoff),
        "lead": lead_json(lead, base_url),
        "why": why,
        "engaged_content": engaged_content(session, lead.id, recent),
        "messages": messages_received(session, lead.id, recent),
        "stage_history": stage_history(session, lead.id),
    }


def handoff_json(handoff: Handoff) -> dict[str, Any]:
    return {
        "id": handoff.id,
        "kind": handoff.kind,
        "stage": handoff.stage,
        "priority": handoff.priority,
        "opened_at": _iso(handoff.opened_at),
        "due_at": _iso(handoff.due_at),
        "closed_at": _iso(handoff.closed_at),
        "outcome": handoff.outcome,
        "breached_at": _iso(handoff.breached_at),
        "owner": handoff.owner,
        "cycle": handoff.cycle,
    }


def lead_json(lead: Lead, base_url: str) -> dict[str, Any]:
    fields = (
        "id",
        "email",
        "first_name",
        "last_name",
        "company",
        "title",
        "industry",
        "company_size",
        "country",
        "persona",
        "journey_stage",
        "lifecycle_stage",
        "cycle",
        "owner",
    )
    data: dict[str, Any] = {name: getattr(lead, name) for name in fields}
    data["url"] = f"{base_url.rstrip('/')}/api/v1/leads/{lead.id}"
    return data


def engaged_content(session: Session, lead_id: int, limit: int) -> list[dict[str, Any]]:
    """The lead's latest human behavior, with the title and URL of the content."""
    query = (
        select(Event)
        .where(
            Event.lead_id == lead_id,
            Event.type.in_(CONTENT_EVENTS),
            Event.is_human.is_(True),
        )
        .order_by(Event.occurred_at.desc(), Event.id.desc())
        .limit(limit)
    )
    return [
        {
            "type": event.type,
            "at": _iso(event.occurred_at),
            "title": str(event.data.get("title") or event.data.get("name") or ""),
            "url": str(event.data.get("url") or ""),
        }
        for event in session.scalars(query)
    ]


def messages_received(session: Session, lead_id: int, limit: int) -> list[dict[str, Any]]:
    query = (
        select(Message)
        .where(Message.lead_id == lead_id, Message.status == "sent")
        .order_by(Message.sent_at.desc(), Message.id.desc())
        .limit(limit)
    )
    return [
        {
            "sequence": m.sequence_key,
            "step": m.step_id,
            "subject": m.subject,
            "sent_at": _iso(m.sent_at),
        }
        for m in session.scalars(query)
    ]


def stage_history(session: Session, lead_id: int) -> list[dict[str, Any]]:
    """Every stage change of the lead, oldest first, with the score at that moment."""
    query = select(StageChange).where(StageChange.lead_id == lead_id)
    return [
        stage_change_json(change)
        for change in session.scalars(query.order_by(StageChange.at, StageChange.id))
    ]


def stage_change_json(change: StageChange) -> dict[str, Any]:
    return {
        "from": change.from_stage,
        "to": change.to_stage,
        "at": _iso(change.at),
        "reason": change.reason_kind,
        "detail": change.reason_detail,
        "actor": change.actor,
        "score": change.score,
        "cycle": change.cycle,
        "data": change.data,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# -- queueing notifications ----------------------------------------------------------------


@dataclass(frozen=True)
class Targets:
    """Where notifications go: signed JSON webhooks and Slack-compatible URLs."""

    webhooks: tuple[str, ...] = ()
    slack: tuple[str, ...] = ()

    @classmethod
    def of(cls, spec: HandoffSpec | None, settings: Settings) -> Targets:
        """The YAML's targets plus those in settings (each URL once)."""
        webhooks = [t.url for t in spec.webhooks] if spec else []
        slack = [t.url for t in spec.slack] if spec else []
        webhooks += _urls(settings.handoff_webhook_urls)
        slack += _urls(settings.handoff_slack_urls)
        return cls(tuple(dict.fromkeys(webhooks)), tuple(dict.fromkeys(slack)))


def _urls(text: str) -> list[str]:
    return [url.strip() for url in text.split(",") if url.strip()]


@dataclass(frozen=True)
class TargetSecret:
    """A webhook target's own signing secret: the variable lifecycle.yaml names, and its
    value in this process's environment ("" when it is not set)."""

    variable: str
    value: str


def target_secrets(spec: HandoffSpec | None, environ: Mapping[str, str]) -> dict[str, TargetSecret]:
    """The own secret of each webhook target of lifecycle.yaml that names one, by URL
    (read when the webhooks are sent, so a changed secret needs no re-queueing)."""
    targets = spec.webhooks if spec else []
    return {
        t.url: TargetSecret(t.secret_env, environ.get(t.secret_env, ""))
        for t in targets
        if t.secret_env
    }


def _secret_for(
    url: str, settings: Settings, secrets: Mapping[str, TargetSecret]
) -> tuple[str, str]:
    """(secret, "") for a webhook to ``url``, or ("", why it must not be sent)."""
    own = secrets.get(url)
    if own is None:
        return (settings.webhook_secret, "") if settings.webhook_secret else ("", NO_SECRET)
    if not own.value:
        # Never NURTURE_WEBHOOK_SECRET instead: the receiver verifies with its own.
        return "", f"{own.variable} (this target's secret_env) is not set: not sent unsigned"
    return own.value, ""


def queue_notification(
    session: Session,
    *,
    event: str,
    document: dict[str, Any],
    targets: Targets,
    lead_id: int,
    handoff_id: int | None,
    now: datetime,
) -> list[WebhookDelivery]:
    """One delivery per target, due now (sent by the engine's pass, never inline)."""
    payload = {"event": event, "created_at": now.isoformat(), **document}
    rows = [
        WebhookDelivery(
            handoff_id=handoff_id,
            lead_id=lead_id,
            event=event,
            target_kind=kind,
            target_url=url,
            payload=payload if kind == "webhook" else slack_message(event, document),
            status="pending",
            attempts=0,
            next_attempt_at=now,
            last_error="",
            created_at=now,
        )
        for kind, urls in (("webhook", targets.webhooks), ("slack", targets.slack))
        for url in urls
    ]
    session.add_all(rows)
    return rows


def slack_message(event: str, document: dict[str, Any]) -> dict[str, Any]:
    """A Slack-compatible message (``text`` for notifications, ``blocks`` for the view)."""
    lead = document.get("lead", {})
    handoff = document.get("handoff", {})
    who = " ".join(p for p in (lead.get("first_name"), lead.get("last_name")) if p)
    who = slack_escape(who or lead.get("email") or "a lead")
    company = f" ({slack_escape(lead['company'])})" if lead.get("company") else ""
    headline = _headline(event, handoff, f"{who}{company}")
    why = document.get("why", {})
    score = why.get("score", {}) or {}
    lines = [f"*Why:* {slack_escape(why.get('reason', ''))}"]
    if score:
        lines.append(
            f"*Score:* {score.get('total')} (fit {score.get('fit')}, "
            f"engagement {score.get('engagement')})"
        )
    if handoff.get("due_at"):
        owner = slack_escape(handoff.get("owner") or "unassigned")
        lines.append(f"*Due:* {handoff['due_at']}  *Owner:* {owner}")
    content = document.get("engaged_content", [])[:3]
    lines += [
        f"- {c['type']}: {slack_escape(c['title'] or c['url'])}"
        for c in content
        if c["title"] or c["url"]
    ]
    return {
        "text": headline,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": headline[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:3000]}},
        ],
    }


def slack_escape(text: str) -> str:
    """Lead-supplied text made inert in Slack mrkdwn: ``&``, ``<`` and ``>`` escaped as
    Slack asks (so ``<!channel>`` in a name is shown, not a ping of the channel)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _headline(event: str, handoff: dict[str, Any], who: str) -> str:
    if event == "sla.breached":
        return f"SLA breached: {who} waited too long as {handoff.get('stage', '').upper()}"
    hot = "Hot " if handoff.get("priority") == "hot" else ""
    return f"{hot}{handoff.get('stage', '').upper()} for sales: {who}"


# -- the delivery pass ---------------------------------------------------------------------


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
        signer = _secret_for(item.url, settings, secrets or {})
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
