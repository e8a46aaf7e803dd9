"""Rendering, building and sending the claimed messages of a batch over one transport
connection. Runs outside any database transaction; outcomes are returned as data.

One message's failure never stops the batch: a template or address problem fails that
message, and an unexpected error while sending makes its outcome ``unknown`` (never resent).

Everything runs in the calling thread. A sender thread that sends message k while this
one builds message k+1 was measured (bench/README.md): slower, because the two threads hand
the GIL back and forth at every socket operation, which costs more CPU than the overlap
saves when the SMTP server answers within microseconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Any, Literal

from nurture.authoring.templates import TemplateProblem, TemplateRenderer, build_context
from nurture.bootstrap import Runtime
from nurture.core.engine import SendEmail
from nurture.delivery.mime import OutgoingEmail, build_message, make_message_id
from nurture.delivery.transports import Transport, TransportError
from nurture.services.tracking import save_links
from nurture.settings import Settings
from nurture.tokens import unsubscribe_url
from nurture.tracking.links import TrackedLink, track, tracking_for

log = logging.getLogger(__name__)

OutcomeStatus = Literal["sent", "retry", "bounced", "failed", "unknown"]


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
    """What became of one message. ``unknown``: the transport failed in a way that does not
    say whether the message left; it is never resent."""

    pending: PendingSend
    status: OutcomeStatus
    subject: str = ""
    message_id: str = ""
    error: str = ""


def deliver(rt: Runtime, pending: list[PendingSend], now: datetime) -> list[Outcome]:
    """Send every pending message, reusing one connection for the batch."""
    if not pending:
        return []
    composed = [_compose_one(rt, p, now) for p in pending]
    try:
        # The links are stored before any mail leaves: a click the moment it arrives finds them.
        save_links(rt.sessions, {c.pending.message_id: c.links for c in composed if c.email}, now)
    except Exception as exc:  # nothing has left: every message is tried again later
        log.error("links not stored, %d messages not sent: %s", len(pending), exc)
        error = f"not sent: the links could not be stored: {type(exc).__name__}: {exc}"
        return [c.failure or Outcome(c.pending, "retry", error=error) for c in composed]
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
    except Exception as exc:  # nothing has left: a failure, and the batch goes on
        log.error("message %s not built: %s", pending.message_id, exc, exc_info=exc)
        error = f"not built: {type(exc).__name__}: {exc}"
        return _Composed(pending, failure=Outcome(pending, "failed", error=error))
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
    except Exception as exc:
        # Not the transport's own failure: whether the message left is unknown, so it is
        # never resent, and the connection (in an unknown state) is dropped.
        log.error("message %s: unexpected error while sending", pending.message_id, exc_info=exc)
        _reset(transport)
        error = f"outcome unknown: {type(exc).__name__}: {exc}"
        return Outcome(pending, "unknown", email.subject, email.message_id, error)
    return Outcome(pending, "sent", email.subject, email.message_id)


def _reset(transport: Transport) -> None:
    """Drop the batch's connection; the next send opens a new one."""
    try:
        transport.close()
    except Exception as exc:
        log.warning("closing the transport after an error failed: %s", exc)
    transport.open()


def compose(rt: Runtime, pending: PendingSend, now: datetime) -> OutgoingEmail:
    """The email for a pending message: rendered for the lead, with signed links."""
    return compose_tracked(rt, pending, now)[0]


def compose_tracked(
    rt: Runtime, pending: PendingSend, now: datetime
) -> tuple[OutgoingEmail, tuple[TrackedLink, ...]]:
    """The email for a pending message, its links rewritten for click tracking (with UTM
    parameters and an open pixel), and the links to store for the click redirect."""
    return compose_email(rt.settings, rt.renderer, pending, now)


def compose_email(
    settings: Settings,
    renderer: TemplateRenderer,
    pending: PendingSend,
    now: datetime,
    *,
    message_id_prefix: str = "nurture",
) -> tuple[OutgoingEmail, tuple[TrackedLink, ...]]:
    """``compose_tracked`` without a runtime (``nurture preview`` uses it, with message id
    0): only the template's own links are tracked, never a URL from lead data."""
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
    rendered = renderer.render_email(decision.template, decision.subject, decision.locale, context)
    tracking = tracking_for(
        settings,
        pending.message_id,
        pending.sequence_key,
        decision.step_id,
        unsubscribe,
        allowed=rendered.template_urls,
    )
    tracked = track(rendered.html, rendered.text, tracking)
    lead = pending.lead
    domain = settings.sender_email.rpartition("@")[2] or "nurture.local"
    name = " ".join(p for p in (lead.get("first_name"), lead.get("last_name")) if p)
    email = OutgoingEmail(
        to_email=lead["email"],
        # On one line, as the subject is (render_subject): a line break is no header.
        to_name=" ".join(name.split()),
        from_email=settings.sender_email,
        from_name=settings.sender_name,
        reply_to=settings.reply_to,
        subject=rendered.subject,
        html=tracked.html,
        text=tracked.text,
        message_id=make_message_id(f"{message_id_prefix}.{pending.message_id}", domain),
        unsubscribe_url=unsubscribe,
        unsubscribe_mailto=settings.unsubscribe_mailto,
        headers=(
            ("X-Nurture-Sequence", pending.sequence_key),
            ("X-Nurture-Step", decision.step_id),
        ),
        date=now,
    )
    return email, tracked.links
