"""Rendering, building and sending the claimed messages of a batch over one transport
connection. Runs outside any database transaction; outcomes are returned as data."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Any, Literal

from nurture.authoring.templates import TemplateProblem, build_context
from nurture.bootstrap import Runtime
from nurture.core.engine import SendEmail
from nurture.delivery.mime import OutgoingEmail, build_message, make_message_id
from nurture.delivery.transports import Transport, TransportError
from nurture.services.tracking import save_links
from nurture.tokens import unsubscribe_url
from nurture.tracking.links import TrackedLink, track, tracking_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PendingSend:
    """A message claimed in the database and not yet handed to the transport."""

    message_id: int
    enrollment_id: int
    decision: SendEmail
    lead: dict[str, Any]
    sequence_key: str
    sequence_name: str


@dataclass(frozen=True)
class Outcome:
    pending: PendingSend
    status: Literal["sent", "retry", "bounced", "failed"]
    subject: str = ""
    message_id: str = ""
    error: str = ""


def deliver(rt: Runtime, pending: list[PendingSend], now: datetime) -> list[Outcome]:
    """Send every pending message, reusing one connection for the batch."""
    if not pending:
        return []
    composed = [_compose_one(rt, p, now) for p in pending]
    # The links are stored before any mail leaves: a click the moment it arrives finds them.
    save_links(rt.sessions, {c.pending.message_id: c.links for c in composed if c.email}, now)
    with rt.transport_factory() as transport:
        return [_deliver_one(rt, transport, c) for c in composed]


@dataclass(frozen=True)
class _Composed:
    """A message ready to send (``email`` and ``message``), or the failure that stopped it."""

    pending: PendingSend
    email: OutgoingEmail | None = None
    message: EmailMessage | None = None
    links: tuple[TrackedLink, ...] = ()
    failure: Outcome | None = None


def _compose_one(rt: Runtime, pending: PendingSend, now: datetime) -> _Composed:
    try:
        email, links = compose_tracked(rt, pending, now)
        message = build_message(email)
    except TemplateProblem as problem:
        log.error("message %s not rendered: %s", pending.message_id, problem)
        return _Composed(pending, failure=Outcome(pending, "failed", error=f"template: {problem}"))
    except ValueError as exc:  # e.g. an address no SMTP server would take
        log.error("message %s not built: %s", pending.message_id, exc)
        return _Composed(pending, failure=Outcome(pending, "failed", error=str(exc)))
    return _Composed(pending, email, message, links)


def _deliver_one(rt: Runtime, transport: Transport, composed: _Composed) -> Outcome:
    pending, email, message = composed.pending, composed.email, composed.message
    if composed.failure is not None or email is None or message is None:
        return composed.failure or Outcome(pending, "failed", error="not composed")
    try:
        transport.send(message, envelope_from=rt.settings.sender_email, to=email.to_email)
    except ValueError as exc:
        return Outcome(pending, "failed", email.subject, email.message_id, str(exc))
    except TransportError as exc:
        status: Literal["bounced", "retry"] = "bounced" if exc.permanent else "retry"
        log.warning("message %s %s: %s", pending.message_id, status, exc)
        return Outcome(pending, status, email.subject, email.message_id, str(exc))
    return Outcome(pending, "sent", email.subject, email.message_id)


def compose(rt: Runtime, pending: PendingSend, now: datetime) -> OutgoingEmail:
    """The email for a pending message: rendered for the lead, with signed links."""
    return compose_tracked(rt, pending, now)[0]


def compose_tracked(
    rt: Runtime, pending: PendingSend, now: datetime
) -> tuple[OutgoingEmail, tuple[TrackedLink, ...]]:
    """The email for a pending message, its links rewritten for click tracking (with UTM
    parameters and an open pixel), and the links to store for the click redirect."""
    settings = rt.settings
    decision = pending.decision
    unsubscribe = unsubscribe_url(settings.base_url, settings.secret_key, pending.message_id)
    context = build_context(
        pending.lead,
        sender_name=settings.sender_name,
        sender_email=settings.sender_email,
        unsubscribe_url=unsubscribe,
        sequence_key=pending.sequence_key,
        sequence_name=pending.sequence_name,
        step_id=decision.step_id,
    )
    rendered = rt.renderer.render_email(
        decision.template, decision.subject, decision.locale, context
    )
    tracked = track(
        rendered.html,
        rendered.text,
        tracking_for(
            settings, pending.message_id, pending.sequence_key, decision.step_id, unsubscribe
        ),
    )
    lead = pending.lead
    domain = settings.sender_email.rpartition("@")[2] or "nurture.local"
    email = OutgoingEmail(
        to_email=lead["email"],
        to_name=" ".join(p for p in (lead.get("first_name"), lead.get("last_name")) if p),
        from_email=settings.sender_email,
        from_name=settings.sender_name,
        reply_to=settings.reply_to,
        subject=rendered.subject,
        html=tracked.html,
        text=tracked.text,
        message_id=make_message_id(f"nurture.{pending.message_id}", domain),
        unsubscribe_url=unsubscribe,
        unsubscribe_mailto=settings.unsubscribe_mailto,
        headers=(
            ("X-Nurture-Sequence", pending.sequence_key),
            ("X-Nurture-Step", decision.step_id),
        ),
        date=now,
    )
    return email, tracked.links
