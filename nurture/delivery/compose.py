"""Composing one email for a lead: rendered from its templates, links rewritten for click
tracking (with UTM parameters and an open pixel), signed unsubscribe link. No I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from nurture.authoring.lead_context import build_context
from nurture.authoring.templates import TemplateRenderer
from nurture.delivery.mime import OutgoingEmail, make_message_id
from nurture.settings import Settings
from nurture.tracking.links import TrackedLink, track, tracking_for
from nurture.tracking.tokens import unsubscribe_url


class EmailContent(Protocol):
    """What one step sends: its template and subject, in the lead's locale (the engine's
    ``SendEmail`` decision), and the step that follows it."""

    @property
    def step_id(self) -> str: ...
    @property
    def template(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def locale(self) -> str: ...
    @property
    def next_step(self) -> str | None: ...


@dataclass(frozen=True)
class PendingSend:
    """A message claimed in the database and not yet handed to the transport."""

    message_id: int
    enrollment_id: int
    decision: EmailContent
    lead: Mapping[str, Any]
    sequence_key: str
    sequence_name: str


def compose_email(
    settings: Settings,
    renderer: TemplateRenderer,
    pending: PendingSend,
    now: datetime,
    *,
    message_id_prefix: str = "nurture",
) -> tuple[OutgoingEmail, tuple[TrackedLink, ...]]:
    """The email for a pending message, and the links to store for the click redirect
    (``nurture preview`` uses it too, with message id 0). Only the template's own links
    are tracked, never a URL from lead data."""
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
        locale=decision.locale,
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
    email = OutgoingEmail(
        to_email=lead["email"],
        # On one line, as the subject is (render_subject): a line break is no header.
        to_name=" ".join(str(context["lead"]["display_name"]).split()),
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
