"""Reading ``scoring.yaml``: the spec with ``file:line`` problems, and compiled rules (from
the file, or from the document a process published to the database).

The rules live in the sequences folder as ``scoring.yaml`` (or ``scoring.yml``). Without
that file scoring is a no-op: events are marked scored and every score is 0."""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from nurture.authoring.errors import describe_error, format_loc
from nurture.authoring.problems import Problem, has_errors
from nurture.authoring.yamlsource import LineMap, YamlSourceError, load_yaml
from nurture.scoring import spec as schema
from nurture.scoring.rules import ScoringRules, compile_rules
from nurture.scoring.spec import KNOWN_EVENTS, SCORING_KIND, ScoringSpec

log = logging.getLogger(__name__)

SCORING_FILES = ("scoring.yaml", "scoring.yml")
SECTIONS = ("fit", "engagement", "negative")
EVENT_FIELDS = frozenset(schema.EventMatch.model_fields) | {"cap", "decays"}


class ScoringError(Exception):
    """``scoring.yaml`` has errors; nothing is scored with it."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class CheckedScoring:
    """One scoring file: its spec (None when it has errors) and every problem found."""

    path: str
    spec: ScoringSpec | None
    problems: list[Problem]


def scoring_path(sequences_dir: Path) -> Path:
    """Where the scoring rules of a sequences folder are (the file may not exist)."""
    for name in SCORING_FILES:
        if (sequences_dir / name).is_file():
            return sequences_dir / name
    return sequences_dir / SCORING_FILES[0]


def load_rules(path: Path) -> ScoringRules:
    """Compiled rules from a scoring file; no file means no rules. Raises ScoringError."""
    spec = load_spec(path)
    return ScoringRules(source=str(path)) if spec is None else compile_rules(spec, str(path))


def load_spec(path: Path) -> ScoringSpec | None:
    """The spec of a scoring file (None: there is no file). Raises ScoringError."""
    if not path.exists():
        return None
    checked = check_scoring_file(path)
    errors = [p for p in checked.problems if p.is_error]
    if errors or checked.spec is None:
        raise ScoringError(errors)
    return checked.spec


def spec_document(spec: ScoringSpec) -> dict[str, Any]:
    """The spec as plain JSON data (what is published in ``rule_versions``)."""
    return spec.model_dump(mode="json", by_alias=True, exclude_none=True)


def rules_from_document(document: dict[str, Any] | None, source: str) -> ScoringRules:
    """The rules a published document holds (None: the folder had no scoring file)."""
    if document is None:
        return ScoringRules(source=source)
    return compile_rules(ScoringSpec.model_validate(document), source)


def check_scoring_file(path: Path) -> CheckedScoring:
    """Every problem in one scoring file (which must say ``kind: scoring``)."""
    try:
        data, lines = load_yaml(path)
    except YamlSourceError as exc:
        return CheckedScoring(str(path), None, exc.problems)
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind != SCORING_KIND:
        message = f"a scoring file starts with 'kind: {SCORING_KIND}', got kind {kind!r}"
        return CheckedScoring(str(path), None, [Problem(str(path), 1, message)])
    return check_scoring_data(data, lines, str(path))


def check_scoring_data(data: dict[str, Any], lines: LineMap, file: str) -> CheckedScoring:
    """Validate parsed scoring YAML: its shape, rule names across sections, event types."""
    body = {k: v for k, v in data.items() if k != "kind"}
    sections = {s: body[s] for s in SECTIONS if isinstance(body.get(s), dict)}
    problems = _duplicate_names(sections, lines, file) + _unknown_events(sections, lines, file)
    try:
        spec = ScoringSpec.model_validate(body)
    except ValidationError as exc:
        problems += [
            Problem(file, lines.line_for(error["loc"]), _describe(error))
            for error in exc.errors(include_url=False)
        ]
        return CheckedScoring(file, None, problems)
    return CheckedScoring(file, None if has_errors(problems) else spec, problems)


def _duplicate_names(
    sections: dict[str, dict[str, Any]], lines: LineMap, file: str
) -> list[Problem]:
    """A rule name must be unique across sections: breakdowns are keyed by it."""
    first: dict[str, str] = {}
    problems = []
    for section, rules in sections.items():
        for name in rules:
            if name in first:
                where = lines.line_for((first[name], name))
                message = (
                    f"{section}.{name}: rule name '{name}' is already used in "
                    f"{first[name]} (line {where}): names must be unique across sections"
                )
                problems.append(Problem(file, lines.line_for((section, name)), message))
            else:
                first[name] = section
    return problems


def _unknown_events(
    sections: dict[str, dict[str, Any]], lines: LineMap, file: str
) -> list[Problem]:
    """Event types outside the vocabulary: a warning (a site may send its own)."""
    problems = []
    for section, rules in sections.items():
        for name, rule in rules.items():
            given = rule.get("event") if isinstance(rule, dict) else None
            events = given if isinstance(given, list) else [given] if given else []
            for n, event in enumerate(events):
                if not isinstance(event, str) or event in KNOWN_EVENTS:
                    continue
                close = difflib.get_close_matches(event, KNOWN_EVENTS, n=1, cutoff=0.7)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                message = (
                    f"{section}.{name}.event: unknown event type '{event}'{hint}; "
                    "no event of that type is recorded unless your site sends it"
                )
                line = lines.line_for((section, name, "event", n))
                problems.append(Problem(file, line, message, "warning"))
    return problems


def _describe(error: Any) -> str:
    loc = tuple(error["loc"])
    if error["type"] == "extra_forbidden":
        where = format_loc(loc[:-1])
        message = f"unknown field '{loc[-1]}'{_suggestion(str(loc[-1]))}"
        if loc[0] == "fit" and loc[-1] in EVENT_FIELDS:
            message = (
                f"unknown field '{loc[-1]}': fit rules test who the lead is (with 'if'); "
                "rules on events go in engagement"
            )
        return f"{where}: {message}" if where else message
    if loc and loc[-1] == "[key]":
        return (
            f"{format_loc(loc[:-1])}: rule name {str(loc[-2])!r}: use lower-case letters, "
            f"digits, '-' and '_' (at most {schema.MAX_RULE_NAME} characters)"
        )
    return describe_error(error, _suggestion)


def _suggestion(name: str) -> str:
    names = {"kind"}
    for model in vars(schema).values():
        if isinstance(model, type) and issubclass(model, BaseModel):
            names.update(f.alias or n for n, f in model.model_fields.items())
    close = difflib.get_close_matches(name, sorted(names), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""
