"""Finding and checking ``lifecycle.yaml``: ``file:line`` problems like the sequences get.

The lifecycle file lives in the sequences folder (any ``*.yaml`` with ``kind: lifecycle``).
Besides its shape, the checks are about what it names: sequences that must exist and admit
the stage, fit rules that ``scoring.yaml`` must define, known events, holiday calendars."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import holidays
from pydantic import ValidationError

from nurture.authoring.errors import validation_problems as pydantic_problems
from nurture.authoring.expressions import ConditionError, compile_condition
from nurture.authoring.problems import Problem
from nurture.authoring.sources import files_of_kind
from nurture.authoring.yamlsource import LineMap, YamlSourceError, load_yaml
from nurture.core.stages import LifecycleStage
from nurture.core.vocabulary import ENGAGEMENT_EVENTS
from nurture.funnel.renurture import renurture_problems, route_note
from nurture.funnel.spec import LIFECYCLE_KIND, LifecycleSpec
from nurture.sequences.loading import SourcedSequence, load_sources
from nurture.sequences.spec import SequenceSpec

SCORING_KIND = "scoring"
# The engine reads the funnel rules from this file of the sequences folder.
LIFECYCLE_FILES = ("lifecycle.yaml", "lifecycle.yml")
# The event vocabulary (CONTRACTS.md): what a fast-track trigger may count.
KNOWN_EVENTS = ENGAGEMENT_EVENTS


class LifecycleConfigError(Exception):
    """``lifecycle.yaml`` has errors; the funnel refuses to run on it."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class SourcedLifecycle:
    """The loaded spec, its file, and the line of every value in it."""

    spec: LifecycleSpec
    path: str
    lines: LineMap

    def line(self, *loc: str | int) -> int:
        return self.lines.line_for(loc)

    def problem(self, message: str, *loc: str | int, severity: str = "error") -> Problem:
        return Problem(
            self.path, self.line(*loc), message, "warning" if severity == "warning" else "error"
        )


def load_lifecycle_file(file: Path) -> tuple[SourcedLifecycle | None, list[Problem]]:
    """Parse and shape-check one lifecycle file."""
    try:
        data, lines = load_yaml(file)
    except YamlSourceError as exc:
        return None, exc.problems
    if not isinstance(data, dict):
        return None, [Problem(str(file), 1, "expected a mapping")]
    data = {k: v for k, v in data.items() if k != "kind"}
    try:
        spec = LifecycleSpec.model_validate(data)
    except ValidationError as exc:
        return None, pydantic_problems(exc, str(file), lines)
    return SourcedLifecycle(spec, str(file), lines), []


def lifecycle_problems(paths: Sequence[Path], sources: Sequence[SourcedSequence]) -> list[Problem]:
    """Every problem of the lifecycle files under ``paths`` (the ``nurture validate`` hook)."""
    files = files_of_kind(paths, LIFECYCLE_KIND)
    problems: list[Problem] = []
    if len(files) > 1:
        first = files[0]
        problems += [
            Problem(str(f), 1, f"a second lifecycle file ({first} is the first)") for f in files[1:]
        ]
    for file in files[:1]:
        if file.name not in LIFECYCLE_FILES:
            message = (
                f"the engine reads the funnel rules from {LIFECYCLE_FILES[0]}: rename this file"
            )
            problems.append(Problem(str(file), 1, message, "warning"))
        sourced, found = load_lifecycle_file(file)
        problems += found
        if sourced is not None:
            specs = _sequences_near(file, paths, sources)
            problems += check_lifecycle(sourced, specs, fit_rule_names([*paths, file.parent]))
    return problems


def lifecycle_notes(paths: Sequence[Path], sources: Sequence[SourcedSequence]) -> list[str]:
    """What ``nurture validate`` shows besides problems: the re-nurture track each persona
    gets for each reject reason (its own, or the generic one)."""
    files = files_of_kind(paths, LIFECYCLE_KIND)
    sourced = load_lifecycle_file(files[0])[0] if files else None
    if sourced is None:
        return []
    specs = _sequences_near(files[0], paths, sources)
    reasons = sourced.spec.sales.reject_reasons
    return [route_note(code, reason, specs) for code, reason in reasons.items()]


def _sequences_near(
    file: Path, paths: Sequence[Path], sources: Sequence[SourcedSequence]
) -> list[SequenceSpec]:
    # A lifecycle file validated on its own is checked against the sequences beside it.
    if any(p.is_dir() for p in paths):
        return [s.loaded.spec for s in sources]
    near, _ = load_sources([file.parent])
    return [s.loaded.spec for s in near]


def fit_rule_names(paths: Iterable[Path]) -> frozenset[str] | None:
    """The fit rule names of ``scoring.yaml`` (None when there is no scoring file)."""
    files = sorted(set(files_of_kind(paths, SCORING_KIND)))
    if not files:
        return None
    names: set[str] = set()
    for file in files:
        data, _ = load_yaml(file)
        fit = data.get("fit") if isinstance(data, dict) else None
        names.update(str(k) for k in (fit or {}) if isinstance(fit, dict))
    return frozenset(names)


def check_lifecycle(
    sourced: SourcedLifecycle, specs: Sequence[SequenceSpec], fit_names: frozenset[str] | None
) -> list[Problem]:
    """What the lifecycle file names must exist and make sense."""
    return (
        _fit_refs(sourced, fit_names)
        + _exclusion_exprs(sourced)
        + _events(sourced)
        + _sequence_refs(sourced, {s.key: s for s in specs})
        + _calendars(sourced)
    )


def _fit_refs(sourced: SourcedLifecycle, fit_names: frozenset[str] | None) -> list[Problem]:
    if fit_names is None:
        return []
    problems = []
    for i, rule in enumerate(sourced.spec.mql.rules):
        for j, name in enumerate(rule.fit):
            if name not in fit_names:
                hint = _suggest(name, sorted(fit_names))
                known = ", ".join(sorted(fit_names)) or "none"
                message = (
                    f"mql.rules[{i}].fit: no fit rule '{name}' in scoring.yaml{hint} "
                    f"(fit rules: {known})"
                )
                problems.append(sourced.problem(message, "mql", "rules", i, "fit", j))
    return problems


def _exclusion_exprs(sourced: SourcedLifecycle) -> list[Problem]:
    problems = []
    for i, exclusion in enumerate(sourced.spec.exclusions):
        expr = exclusion.if_.expr
        if expr is None:
            continue
        try:
            compile_condition(expr)
        except ConditionError as exc:
            problems.append(
                sourced.problem(f"exclusions[{i}].if.expr: {exc}", "exclusions", i, "if", "expr")
            )
    return problems


def _events(sourced: SourcedLifecycle) -> list[Problem]:
    return [
        sourced.problem(
            f"fast_track[{i}].event: unknown event '{trigger.event}'"
            f"{_suggest(trigger.event, sorted(KNOWN_EVENTS))}",
            "fast_track",
            i,
            "event",
        )
        for i, trigger in enumerate(sourced.spec.fast_track)
        if trigger.event not in KNOWN_EVENTS
    ]


def _sequence_refs(sourced: SourcedLifecycle, specs: dict[str, SequenceSpec]) -> list[Problem]:
    problems = []
    for stage, track in sourced.spec.stages.items():
        if track.sequence:
            loc: tuple[str, ...] = ("stages", stage.value, "sequence")
            problems += _sequence_ref(sourced, specs, track.sequence, stage, loc)

    def check_ref(key: str, loc: tuple[str, ...]) -> list[Problem]:
        return _sequence_ref(sourced, specs, key, LifecycleStage.recycled, loc)

    def warn(message: str, loc: tuple[str, ...]) -> Problem:
        return sourced.problem(message, *loc, severity="warning")

    for code, reason in sourced.spec.sales.reject_reasons.items():
        problems += renurture_problems(code, reason, list(specs.values()), check_ref, warn)
    return problems


def _sequence_ref(
    sourced: SourcedLifecycle,
    specs: dict[str, SequenceSpec],
    key: str,
    stage: LifecycleStage,
    loc: tuple[str, ...],
) -> list[Problem]:
    where = ".".join(loc)
    spec = specs.get(key)
    if spec is None:
        hint = _suggest(key, sorted(specs))
        return [sourced.problem(f"{where}: no sequence '{key}'{hint}", *loc)]
    if stage not in spec.audience.lifecycle_stages:
        admitted = ", ".join(s.value for s in spec.audience.lifecycle_stages)
        message = (
            f"{where}: sequence '{key}' does not admit {stage.value} leads (its audience "
            f"lifecycle_stages: {admitted}); add {stage.value} or the engine would exit it at once"
        )
        return [sourced.problem(message, *loc)]
    return []


def _calendars(sourced: SourcedLifecycle) -> list[Problem]:
    sla = sourced.spec.sla
    problems = []
    if sla.country and sla.country not in holidays.list_supported_countries():
        problems.append(
            sourced.problem(
                f"sla.country: no holiday calendar for '{sla.country}'", "sla", "country"
            )
        )
    for i, text in enumerate(sla.extra_holidays):
        try:
            date.fromisoformat(text)
        except ValueError:
            problems.append(
                sourced.problem(
                    f"sla.extra_holidays: not a date: {text!r}", "sla", "extra_holidays", i
                )
            )
    return problems


def _suggest(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.7)
    return f" (did you mean '{close[0]}'?)" if close else ""


def lifecycle_path(folder: Path) -> Path:
    """Where the funnel rules of a sequences folder are (the file may not exist)."""
    for name in LIFECYCLE_FILES:
        if (folder / name).is_file():
            return folder / name
    return folder / LIFECYCLE_FILES[0]


def load_lifecycle(folder: Path) -> LifecycleSpec | None:
    """The lifecycle spec of a sequences folder (None when it has none); raise
    LifecycleConfigError when it has errors, so the funnel never runs on a broken file."""
    path = lifecycle_path(folder)
    if not path.is_file():
        return None
    sourced, problems = load_lifecycle_file(path)
    if sourced is None:
        raise LifecycleConfigError(problems)
    return sourced.spec


def spec_document(spec: LifecycleSpec) -> dict[str, Any]:
    """The spec as plain JSON data (what is published in ``rule_versions``)."""
    return spec.model_dump(mode="json", by_alias=True, exclude_none=True)


def spec_from_document(document: dict[str, Any] | None) -> LifecycleSpec | None:
    """The spec a published document holds (None: the folder had no lifecycle file)."""
    return None if document is None else LifecycleSpec.model_validate(document)
