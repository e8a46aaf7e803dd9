"""Shared pieces of the engine tests: fixture sequences, a runtime on the test database,
leads enrolled at a given moment, and read-backs of what the engine stored."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from freezegun import freeze_time
from sqlalchemy import select

from nurture.bootstrap import build_runtime
from nurture.db.models import Enrollment, Event, Lead, Message
from nurture.db.session import transaction
from nurture.delivery.transports import Transport
from nurture.jobs.tick import tick
from nurture.runtime import Runtime
from nurture.sequences.batch import BatchReport
from nurture.sequences.enrollment import enroll
from nurture.settings import Settings
from support import FIXTURES as ALL_FIXTURES
from support import REPO

FIXTURES = ALL_FIXTURES / "engine"
SEQUENCES = FIXTURES / "sequences"
TEMPLATES = FIXTURES / "templates"
REPO_ROOT = REPO
BASE_URL = "https://nurture.example"
SECRET = "test-secret-key"
# A Monday, inside every fixture window (09:00-17:00 UTC on weekdays).
MONDAY = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def engine_settings(db_url: str, **overrides: Any) -> Settings:
    """Settings for the fixture sequences on ``db_url`` (memory transport unless overridden)."""
    values: dict[str, Any] = {
        "database_url": db_url,
        "sequences_dir": SEQUENCES,
        "templates_dir": TEMPLATES,
        "broker_url": "",
        "transport": "memory",
        "base_url": BASE_URL,
        "secret_key": SECRET,
        "default_timezone": "UTC",
        **overrides,
    }
    return Settings(**values)


def make_runtime(
    db_url: str, memory: Transport | None = None, now: datetime = MONDAY, **overrides: Any
) -> Runtime:
    """A runtime with the fixture catalog published; ``memory`` (a transport object) is
    reused for every batch, else ``settings.transport`` is built per batch."""
    factory: Callable[[], Transport] | None = (lambda: memory) if memory else None
    rt = build_runtime(engine_settings(db_url, **overrides), transport_factory=factory)
    rt.load_program(now)
    return rt


def add_lead(
    rt: Runtime,
    email: str,
    now: datetime = MONDAY,
    *,
    persona: str = "tester",
    enrolled: bool = True,
    **fields: Any,
) -> int:
    """Create a lead (and enroll it at ``now`` unless told not to); return its id."""
    values: dict[str, Any] = {
        "first_name": "Alex",
        "company": "Acme",
        "journey_stage": "awareness",
        "lifecycle_stage": "lead",
        "timezone": "UTC",
        "locale": "en",
        **fields,
    }
    with transaction(rt.sessions) as session:
        lead = Lead(email=email, persona=persona, **values)
        session.add(lead)
        session.flush()
        if enrolled:
            assert enroll(session, lead, rt.catalog, now) is not None
        return lead.id


def tick_at(rt: Runtime, now: datetime) -> BatchReport:
    """One embedded scheduler pass with the clock frozen at ``now``."""
    with freeze_time(now):
        return tick(rt, now)


def messages(rt: Runtime, **where: Any) -> list[Message]:
    with rt.sessions() as session:
        query = select(Message).filter_by(**where).order_by(Message.id)
        return list(session.scalars(query))


def enrollments(rt: Runtime, lead_id: int) -> list[Enrollment]:
    with rt.sessions() as session:
        query = select(Enrollment).where(Enrollment.lead_id == lead_id).order_by(Enrollment.id)
        return list(session.scalars(query))


def enrollment(rt: Runtime, lead_id: int) -> Enrollment:
    """The lead's latest enrollment."""
    return enrollments(rt, lead_id)[-1]


def events(rt: Runtime, event_type: str) -> list[Event]:
    with rt.sessions() as session:
        query = select(Event).where(Event.type == event_type).order_by(Event.id)
        return list(session.scalars(query))
