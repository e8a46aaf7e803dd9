"""Shared pieces of the funnel tests: the fixture folder (sequences, scoring.yaml,
lifecycle.yaml), a runtime on the test database, leads, events run through the real
pipeline (scoring, then the funnel), and read-backs of stage history and mail."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import func, select

from nurture.bootstrap import build_runtime
from nurture.db.models import Enrollment, Event, Handoff, Lead, Message, StageChange
from nurture.db.session import transaction
from nurture.delivery.transports import MemoryTransport
from nurture.funnel.funnel import Funnel
from nurture.funnel.pipeline import process_events
from nurture.jobs.tick import tick
from nurture.runtime import Runtime
from nurture.scoring.ledger import refresh_fit
from nurture.sequences.batch import BatchReport
from nurture.sequences.enrollment import enroll
from nurture.settings import Settings
from support import FIXTURES as ALL_FIXTURES

FIXTURES = ALL_FIXTURES / "funnel"
SEQUENCES = FIXTURES / "sequences"
TEMPLATES = FIXTURES / "templates"
# A Monday morning (UTC); the fixture sequences have no send window.
MONDAY = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SECRET = "whsec-test"


def use_fixture_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point what reads the environment (the CLI commands) at the fixtures."""
    monkeypatch.setenv("NURTURE_SEQUENCES_DIR", str(SEQUENCES))
    monkeypatch.setenv("NURTURE_TEMPLATES_DIR", str(TEMPLATES))
    monkeypatch.setenv("NURTURE_WEBHOOK_SECRET", SECRET)


def settings_for(db_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "sequences_dir": SEQUENCES,
        "templates_dir": TEMPLATES,
        "broker_url": "",
        "transport": "memory",
        "base_url": "https://nurture.example",
        "secret_key": "test-secret",
        "default_timezone": "UTC",
        "webhook_secret": SECRET,
        **overrides,
    }
    return Settings(**values)


def make_runtime(
    db_url: str, memory: MemoryTransport | None = None, now: datetime = MONDAY, **overrides: Any
) -> Runtime:
    transport = memory or MemoryTransport()
    rt = build_runtime(settings_for(db_url, **overrides), transport_factory=lambda: transport)
    rt.load_program(now)
    return rt


def funnel(rt: Runtime) -> Funnel:
    return rt.funnel()


def add_lead(
    rt: Runtime, email: str, now: datetime = MONDAY, *, enrolled: bool = True, **fields: Any
) -> int:
    """A lead (fit scored, enrolled in its track unless told not to); returns its id."""
    values: dict[str, Any] = {
        "first_name": "Alex",
        "company": "Acme",
        "title": "Director of Finance",
        "company_size": 500,
        "country": "US",
        "persona": "tester",
        "journey_stage": "awareness",
        "lifecycle_stage": "lead",
        "timezone": "America/New_York",
        "locale": "en",
        **fields,
    }
    with transaction(rt.sessions) as session:
        lead = Lead(email=email, **values)
        session.add(lead)
        session.flush()
        refresh_fit(session, [lead.id], now, rules=rt.program.scoring)
        if enrolled:
            assert enroll(session, lead, rt.catalog, now) is not None
        return lead.id


def behave(rt: Runtime, lead_id: int, event_type: str, at: datetime, **data: Any) -> None:
    """The lead did something: store the event and run the real pipeline at ``at``."""
    with transaction(rt.sessions) as session:
        count = session.scalar(select(func.count()).select_from(Event)) or 0
        event = Event(
            lead_id=lead_id,
            type=event_type,
            occurred_at=at,
            dedupe_key=f"test:{lead_id}:{event_type}:{at.isoformat()}:{count}",
            data=data,
            is_human=True,
        )
        session.add(event)
        session.flush()
        process_events(session, [event.id], at, rt.funnel())


def tick_at(rt: Runtime, now: datetime) -> BatchReport:
    with freeze_time(now):
        return tick(rt, now)


def lead(rt: Runtime, lead_id: int) -> Lead:
    with rt.sessions() as session:
        found = session.get(Lead, lead_id)
        assert found is not None
        return found


def history(rt: Runtime, lead_id: int) -> list[StageChange]:
    with rt.sessions() as session:
        query = select(StageChange).where(StageChange.lead_id == lead_id)
        return list(session.scalars(query.order_by(StageChange.at, StageChange.id)))


def path(rt: Runtime, lead_id: int) -> list[str]:
    """The stages the lead went through, in order: ['lead', 'mql', 'recycled', ...]."""
    changes = history(rt, lead_id)
    return [changes[0].from_stage, *(c.to_stage for c in changes)] if changes else []


def handoffs(rt: Runtime, lead_id: int) -> list[Handoff]:
    with rt.sessions() as session:
        query = select(Handoff).where(Handoff.lead_id == lead_id).order_by(Handoff.id)
        return list(session.scalars(query))


def sent_steps(rt: Runtime, lead_id: int) -> list[str]:
    """``sequence/step`` of every message sent to the lead, in order."""
    with rt.sessions() as session:
        query = select(Message).where(Message.lead_id == lead_id, Message.status == "sent")
        return [
            f"{m.sequence_key}/{m.step_id}" for m in session.scalars(query.order_by(Message.id))
        ]


def active_enrollments(rt: Runtime, lead_id: int) -> list[Enrollment]:
    with rt.sessions() as session:
        query = select(Enrollment).where(
            Enrollment.lead_id == lead_id, Enrollment.status == "active"
        )
        return list(session.scalars(query))
