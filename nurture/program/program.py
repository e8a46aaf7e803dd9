"""The program: what the marketer authored (sequences, scoring rules, the funnel's lifecycle
rules), loaded and checked once per process.

The process that has the YAML folder publishes it to the database; the others read the
latest published version, so every process of a deployment decides with the same rules
(:mod:`nurture.program.loading` does both). A rules file with errors is never used: the
last good version stays in force, and the error is kept to be shown."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nurture.authoring.problems import Problem
from nurture.funnel.loading import LifecycleConfigError
from nurture.funnel.spec import LifecycleSpec
from nurture.scoring.loading import ScoringError
from nurture.scoring.rules import ScoringRules
from nurture.sequences.catalog import Catalog

SCORING, LIFECYCLE = "scoring", "lifecycle"
RULE_KINDS = (SCORING, LIFECYCLE)


@dataclass(frozen=True)
class RulesDocument:
    """One rules file as published: its kind, content version, JSON document (None: the
    folder has no such file) and where it came from."""

    kind: str
    version: str
    document: dict[str, Any] | None
    path: str


@dataclass(frozen=True)
class Program:
    """The sequences catalog and the rules in force. ``scoring`` and ``lifecycle`` raise the
    file's error when no good version was ever loaded."""

    catalog: Catalog
    scoring_rules: ScoringRules | None
    lifecycle_spec: LifecycleSpec | None
    scoring_error: ScoringError | None = None
    lifecycle_error: LifecycleConfigError | None = None
    # The version of each rules kind in force, and (in folder mode) the file stamps read.
    versions: Mapping[str, str] = field(default_factory=dict)
    stamps: Mapping[str, tuple[int, int] | None] = field(default_factory=dict)
    # Warnings about the sequences as loaded from the folder (shown by the CLI).
    warnings: tuple[Problem, ...] = ()

    @property
    def scoring(self) -> ScoringRules:
        """The scoring rules in force (ScoringError if the file never loaded)."""
        if self.scoring_rules is None:
            raise self.scoring_error or ScoringError([])
        return self.scoring_rules

    @property
    def lifecycle(self) -> LifecycleSpec | None:
        """The lifecycle rules in force (None: there are none; LifecycleConfigError if the
        file never loaded)."""
        if self.lifecycle_spec is None and self.lifecycle_error is not None:
            raise self.lifecycle_error
        return self.lifecycle_spec
