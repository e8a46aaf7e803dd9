"""Validation of authored content beyond its shape: references, reachability, time zones,
and whether every email renders for a sample lead of every audience it is sent to."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nurture.authoring.problems import Problem, has_errors, sort_key
from nurture.authoring.sources import yaml_files
from nurture.authoring.templates import (
    TemplateRenderer,
)
from nurture.funnel.loading import lifecycle_notes, lifecycle_problems
from nurture.program.emails import check_emails, template_files, unused_templates
from nurture.program.structure import audience_overlaps, check_structure, duplicate_keys
from nurture.scoring.checks import check_scoring_files
from nurture.sequences.loading import load_sources


@dataclass(frozen=True)
class ValidationReport:
    """What ``nurture validate`` found: counts for the summary, and the problems."""

    sequences: int
    templates: int
    problems: list[Problem] = field(default_factory=list)
    # What is worth seeing though nothing is wrong (which re-nurture track a persona gets).
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not has_errors(self.problems)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]


def validate_path(sequences_path: Path, templates_dir: Path, default_locale: str) -> list[Problem]:
    """Every problem in a sequences folder (or file) and the templates it uses."""
    return validate_paths([sequences_path], templates_dir, default_locale).problems


def validate_paths(
    paths: Sequence[Path], templates_dir: Path, default_locale: str
) -> ValidationReport:
    """Validate sequence folders/files together (keys and audiences must not clash)."""
    sources, problems = load_sources(paths)
    # A file that did not load hides which templates it uses: "not used" would be guesswork.
    all_loaded = not has_errors(problems)
    problems += [
        Problem(str(p), 0, "no sequence files (*.yaml, *.yml) here")
        for p in paths
        if p.is_dir() and not yaml_files(p)
    ]
    problems += duplicate_keys(sources) + audience_overlaps(sources)
    problems += check_scoring_files(paths)
    problems += lifecycle_problems(paths, sources)
    for source in sources:
        problems += check_structure(source)
    templates = template_files(templates_dir)
    if sources and not templates_dir.is_dir():
        problems.append(Problem(str(templates_dir), 0, "templates folder not found"))
    elif sources:
        renderer = TemplateRenderer(templates_dir, default_locale)
        for source in sources:
            problems += check_emails(source, renderer)
        # One file validated alone does not use them all.
        if all_loaded and any(p.is_dir() for p in paths):
            problems += unused_templates(sources, templates_dir, templates)
    unique = sorted(set(problems), key=sort_key)
    notes = lifecycle_notes(paths, sources)
    return ValidationReport(len(sources), len(templates), unique, notes)


# -- across sequences ---------------------------------------------------------------------


# -- one sequence's structure -------------------------------------------------------------


# -- emails ------------------------------------------------------------------------------


# -- templates folder ---------------------------------------------------------------------


# -- helpers ------------------------------------------------------------------------------
