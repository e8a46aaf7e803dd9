"""Who hears about a hand-off and what they get: the webhook and Slack targets, each target's
secret, the notification queued with its document, the Slack message (lead text escaped)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from nurture.db.models import (
    WebhookDelivery,
)
from nurture.funnel.spec import Handoff as HandoffSpec
from nurture.settings import Settings

NO_SECRET = (
    "NURTURE_WEBHOOK_SECRET is not set: hand-off webhooks are never sent unsigned "
    "(set it, or remove the webhook targets)"
)


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


def secret_for(
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
