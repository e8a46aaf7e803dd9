"""The Runtime: what the jobs and the entry points hold, built once per process by
:mod:`nurture.bootstrap`: settings, the database, the template renderer, the mail
transport, and the program (sequences, scoring and lifecycle rules) in force.

Services below never see it: a job hands each the session it works in and the one
dependency of its concept, built here (``rt.funnel()``, ``rt.program.catalog``,
``rt.program.scoring``, ``rt.sender``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from nurture.authoring.expressions import SandboxExpressions
from nurture.authoring.templates import TemplateRenderer
from nurture.core.conditions import Expressions
from nurture.delivery.sending import Sender
from nurture.delivery.transports import Transport
from nurture.funnel.funnel import Funnel
from nurture.program.loading import load_program, refresh_program
from nurture.program.program import Program
from nurture.queues import Queues
from nurture.sequences.caps import FrequencyCap
from nurture.sequences.catalog import Catalog
from nurture.sequences.drip import Drip
from nurture.settings import Settings


@dataclass
class Runtime:
    """One process's dependencies; ``program`` is loaded by :meth:`load_program`."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    renderer: TemplateRenderer
    transport_factory: Callable[[], Transport]
    cap: FrequencyCap
    # The producer of the Celery queues; None in embedded mode (no broker): work runs here.
    queues: Queues | None = None
    expressions: Expressions = field(default_factory=SandboxExpressions)
    _program: Program | None = None
    _funnel: Funnel | None = None
    _drip: Drip | None = None

    @property
    def program(self) -> Program:
        """The program in force (RuntimeError before :meth:`load_program`)."""
        if self._program is None:
            raise RuntimeError("the program is not loaded: call load_program() first")
        return self._program

    @property
    def loaded(self) -> bool:
        return self._program is not None

    @property
    def catalog(self) -> Catalog:
        """The sequences of the program in force."""
        return self.program.catalog

    def load_program(self, now: datetime) -> Program:
        """Load the program from the YAML folder (publishing it) or, without the folder,
        from the database. Raises AuthoringError when the sequences have errors."""
        self.use(load_program(self.sessions, self.settings.sequences_dir, now))
        return self.program

    def refresh_program(self, now: datetime) -> Program:
        """Pick up rules that changed since the program was loaded (a file edited, or a
        version another process published); loads it first if it never was."""
        if self._program is None:
            return self.load_program(now)
        fresh = refresh_program(self._program, self.sessions, self.settings.sequences_dir, now)
        if fresh is not self._program:
            self.use(fresh)
        return self.program

    def use(self, program: Program) -> None:
        """Decide with ``program`` from now on (tests hand in rules of their own)."""
        self._program = program
        self._funnel = self._drip = None

    def funnel(self) -> Funnel:
        """The funnel's dependencies for the program in force."""
        if self._funnel is None:
            program = self.program
            self._funnel = Funnel(
                settings=self.settings,
                catalog=program.catalog,
                lifecycle=program.lifecycle_spec,
                scoring=program.scoring_rules,
                expressions=self.expressions,
                lifecycle_error=program.lifecycle_error,
                scoring_error=program.scoring_error,
            )
        return self._funnel

    def drip(self) -> Drip:
        """The sequence engine's dependencies for the program in force."""
        if self._drip is None:
            self._drip = Drip(
                catalog=self.program.catalog,
                cap=self.cap,
                default_timezone=self.settings.default_timezone,
                default_locale=self.settings.default_locale,
                default_country=self.settings.default_country,
                lease=timedelta(seconds=self.settings.claim_lease_seconds),
                max_retries=self.settings.send_max_retries,
                expressions=self.expressions,
            )
        return self._drip

    def sender(self) -> Sender:
        """What sending needs: settings, templates, transport, the links' database."""
        return Sender(self.settings, self.renderer, self.transport_factory, self.sessions)

    def close(self) -> None:
        self.engine.dispose()
