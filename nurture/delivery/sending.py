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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Literal

from sqlalchemy.orm import Session, sessionmaker

from nurture.authoring.templates import TemplateProblem, TemplateRenderer
from nurture.delivery.compose import PendingSend, compose_email
from nurture.delivery.mime import OutgoingEmail, build_message
from nurture.delivery.transports import Transport, TransportError
from nurture.settings import Settings
from nurture.tracking.links import TrackedLink
from nurture.tracking.stored_links import save_links

log = logging.getLogger(__name__)

OutcomeStatus = Literal["sent", "retry", "bounced", "failed", "unknown"]


@dataclass(frozen=True)
class Sender:
    """What sending needs: the settings (who the mail is from, tracking, signing), the
    templates, the transport, and the database the tracked links are stored in."""

    settings: Settings
    renderer: TemplateRenderer
    transport_factory: Callable[[], Transport]
    sessions: sessionmaker[Session]


@dataclass(frozen=True)
class Outcome:
    """What became of one message. ``unknown``: the transport failed in a way that does not
    say whether the message left; it is never resent."""

    pending: PendingSend
    status: OutcomeStatus
    subject: str = ""
    message_id: str = ""
    error: str = ""


def deliver(sender: Sender, pending: list[PendingSend], now: datetime) -> list[Outcome]:
    """Send every pending message, reusing one connection for the batch."""
    if not pending:
        return []
    composed = [_compose_one(sender, p, now) for p in pending]
    try:
        # The links are stored before any mail leaves: a click the moment it arrives finds them.
        save_links(
            sender.sessions, {c.pending.message_id: c.links for c in composed if c.email}, now
        )
    except Exception as exc:  # nothing has left: every message is tried again later
        log.error("links not stored, %d messages not sent: %s", len(pending), exc)
        error = f"not sent: the links could not be stored: {type(exc).__name__}: {exc}"
        return [c.failure or Outcome(c.pending, "retry", error=error) for c in composed]
    with sender.transport_factory() as transport:
        return [_deliver_one(sender, transport, c) for c in composed]


@dataclass(frozen=True)
class _Composed:
    """A message ready to send (``email`` and ``message``), or the failure that stopped it."""

    pending: PendingSend
    email: OutgoingEmail | None = None
    message: EmailMessage | None = None
    links: tuple[TrackedLink, ...] = ()
    failure: Outcome | None = None


def _compose_one(sender: Sender, pending: PendingSend, now: datetime) -> _Composed:
    try:
        email, links = compose_email(sender.settings, sender.renderer, pending, now)
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


def _deliver_one(sender: Sender, transport: Transport, composed: _Composed) -> Outcome:
    pending, email, message = composed.pending, composed.email, composed.message
    if composed.failure is not None or email is None or message is None:
        return composed.failure or Outcome(pending, "failed", error="not composed")
    try:
        transport.send(message, envelope_from=sender.settings.sender_email, to=email.to_email)
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
