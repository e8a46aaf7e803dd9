"""The one place where dependencies are built from settings and handed down
(cosmicpython's bootstrap). Nothing here runs at import time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from nurture.authoring.problems import Problem
from nurture.authoring.templates import TemplateRenderer
from nurture.core.durations import parse_duration
from nurture.db.session import make_engine, make_session_factory, transaction
from nurture.delivery.transports import Transport, make_transport
from nurture.sequences.caps import FrequencyCap
from nurture.sequences.catalog import Catalog, publish
from nurture.sequences.loading import load_sequences
from nurture.settings import Settings


class AuthoringError(Exception):
    """The sequences folder has errors; the engine refuses to run them."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass
class Runtime:
    """What the services need: settings, database, templates, mail transport, sequences."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    renderer: TemplateRenderer
    transport_factory: Callable[[], Transport]
    catalog: Catalog | None = field(default=None)

    @property
    def cap(self) -> FrequencyCap:
        """The frequency cap the settings configure (parsed once per distinct setting)."""
        return _frequency_cap(self.settings.cap_max_messages, self.settings.cap_period)

    def require_catalog(self) -> Catalog:
        if self.catalog is None:
            raise RuntimeError("sequences are not loaded: call load_catalog() first")
        return self.catalog

    def load_catalog(self, now: datetime) -> Catalog:
        """Load the YAML sequences, refuse them if they have errors, publish new versions."""
        loaded, problems = load_sequences(self.settings.sequences_dir)
        errors = [p for p in problems if p.severity == "error"]
        if errors:
            raise AuthoringError(errors)
        with transaction(self.sessions) as session:
            self.catalog = publish(session, loaded, now)
        return self.catalog

    def catalog_from_db(self) -> Catalog:
        """Workers without the YAML folder run the versions stored in the database."""
        with self.sessions() as session:
            self.catalog = Catalog.from_db(session)
        return self.catalog

    def close(self) -> None:
        self.engine.dispose()


@lru_cache(maxsize=16)
def _frequency_cap(max_messages: int, period: str) -> FrequencyCap:
    # Read several times per message; parsing the period each time showed in profiles.
    return FrequencyCap(max_messages, parse_duration(period).span)


def build_runtime(
    settings: Settings, transport_factory: Callable[[], Transport] | None = None
) -> Runtime:
    engine = make_engine(settings.database_url)
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        renderer=TemplateRenderer(settings.templates_dir, settings.default_locale),
        transport_factory=transport_factory or (lambda: make_transport(settings)),
    )
