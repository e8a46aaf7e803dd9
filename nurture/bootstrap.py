"""The one place where dependencies are built from settings and handed down
(cosmicpython's bootstrap). Nothing here runs at import time."""

from __future__ import annotations

from collections.abc import Callable

from nurture.authoring.templates import TemplateRenderer
from nurture.core.durations import parse_duration
from nurture.db.session import make_engine, make_session_factory
from nurture.delivery.smtp import SmtpTransport
from nurture.delivery.transports import MemoryTransport, OutboxTransport, Transport
from nurture.queues import Queues
from nurture.runtime import Runtime
from nurture.sequences.caps import FrequencyCap
from nurture.settings import Settings


def build_runtime(
    settings: Settings, transport_factory: Callable[[], Transport] | None = None
) -> Runtime:
    """The process's runtime; its program is loaded by ``rt.load_program(now)``."""
    engine = make_engine(settings.database_url)
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        renderer=TemplateRenderer(settings.templates_dir, settings.default_locale),
        transport_factory=transport_factory or (lambda: make_transport(settings)),
        cap=FrequencyCap(settings.cap_max_messages, parse_duration(settings.cap_period).span),
        queues=Queues(settings) if settings.broker_url else None,
    )


def make_transport(settings: Settings) -> Transport:
    """Build the transport ``settings.transport`` names (outbox, smtp or memory)."""
    if settings.transport == "outbox":
        return OutboxTransport(settings.outbox_dir)
    if settings.transport == "smtp":
        return SmtpTransport(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_username,
            settings.smtp_password,
            settings.smtp_security,
            settings.smtp_timeout,
        )
    if settings.transport == "memory":
        return MemoryTransport()
    raise ValueError(f"settings.transport: unknown transport {settings.transport!r}")
