"""What the funnel's services are handed, built once per program by the Runtime."""

from __future__ import annotations

from dataclasses import dataclass

from nurture.core.conditions import NO_EXPRESSIONS, Expressions
from nurture.funnel.spec import LifecycleSpec
from nurture.scoring.rules import ScoringRules
from nurture.sequences.catalog import Catalog
from nurture.settings import Settings


@dataclass(frozen=True)
class Funnel:
    """The lifecycle rules, the scoring rules stage changes record scores with, the
    sequences a stage enrolls into or ends, the settings hand-offs are sent with, and the
    evaluator of ``expr:`` exclusions.

    A rules file that never loaded is kept as its error, raised where the rules are used
    (so a broken lifecycle.yaml stops stage changes, not everything else)."""

    settings: Settings
    catalog: Catalog
    lifecycle: LifecycleSpec | None
    scoring: ScoringRules | None
    expressions: Expressions = NO_EXPRESSIONS
    lifecycle_error: Exception | None = None
    scoring_error: Exception | None = None

    @property
    def spec(self) -> LifecycleSpec | None:
        """The lifecycle rules (None: no lifecycle.yaml, so no automatic promotion,
        hand-offs or SLAs); raises the file's error if it never loaded."""
        if self.lifecycle is None and self.lifecycle_error is not None:
            raise self.lifecycle_error
        return self.lifecycle

    @property
    def rules(self) -> ScoringRules:
        """The scoring rules; raises the file's error if it never loaded."""
        if self.scoring is None:
            raise self.scoring_error or RuntimeError("no scoring rules were given")
        return self.scoring
