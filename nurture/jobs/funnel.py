"""The engine's periodic funnel work: end cool-downs, record SLA breaches, deliver due hand-off
notifications."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime

from nurture.db.session import transaction
from nurture.funnel import sla
from nurture.funnel.funnel import Funnel
from nurture.funnel.loading import LifecycleConfigError
from nurture.funnel.notifications import target_secrets
from nurture.funnel.sales import release_recycled
from nurture.funnel.webhooks import deliver_due
from nurture.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass
class FunnelReport:
    """What one funnel pass did."""

    released: int = 0
    breached: int = 0
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def funnel_pass(rt: Runtime, now: datetime, *, deliver: bool = True) -> FunnelReport:
    """The engine's periodic funnel work: end cool-downs, record SLA breaches and, with
    ``deliver``, deliver due hand-off notifications (a bounded batch: see
    :func:`deliver_notifications`). A broken lifecycle.yaml is logged, never raised."""
    report = FunnelReport()
    funnel = rt.funnel()
    try:
        funnel.spec  # noqa: B018 (raises when lifecycle.yaml never loaded)
    except LifecycleConfigError as exc:  # the send pass must go on
        log.error("lifecycle.yaml not usable, funnel pass skipped: %s", exc)
        report.errors.append(str(exc))
        return report
    if funnel.spec is not None:
        with transaction(rt.sessions) as session:
            report.released = len(release_recycled(session, now, funnel))
            report.breached = len(sla.mark_breaches(session, funnel.spec, rt.settings, now))
    if deliver:
        _deliver(rt, now, funnel, report)
    _log_report(report)
    return report


def deliver_notifications(rt: Runtime, now: datetime) -> FunnelReport:
    """Deliver due hand-off notifications: at most ``webhooks.DELIVERIES_PER_PASS`` or
    ``webhooks.PASS_SECONDS`` of them per call (the rest wait for the next one), so a slow
    receiver never holds up the send pass for long."""
    report = FunnelReport()
    funnel = rt.funnel()
    try:
        funnel.spec  # noqa: B018 (raises when lifecycle.yaml never loaded)
    except LifecycleConfigError as exc:
        log.error("lifecycle.yaml not usable, webhooks not delivered: %s", exc)
        report.errors.append(str(exc))
        return report
    _deliver(rt, now, funnel, report)
    _log_report(report)
    return report


def _deliver(rt: Runtime, now: datetime, funnel: Funnel, report: FunnelReport) -> None:
    spec = funnel.spec.handoff if funnel.spec else None
    attempts = spec.max_attempts if spec else 8
    # Targets' own secrets: the variables lifecycle.yaml names, read from this process.
    secrets = target_secrets(spec, os.environ)
    sent = deliver_due(rt.sessions, rt.settings, now, max_attempts=attempts, secrets=secrets)
    report.delivered, report.retried, report.failed = sent.delivered, sent.retried, sent.failed
    report.errors += sent.errors


def _log_report(report: FunnelReport) -> None:
    if report.released or report.breached or report.delivered or report.retried or report.failed:
        log.info(
            "funnel: %d cool-downs ended, %d SLA breaches, webhooks %d delivered, "
            "%d to retry, %d failed",
            report.released,
            report.breached,
            report.delivered,
            report.retried,
            report.failed,
        )
