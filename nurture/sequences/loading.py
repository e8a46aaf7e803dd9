"""Load sequence files from a folder (or one file) into specs, with ``file:line`` problems."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ValidationError

from nurture.authoring import errors
from nurture.authoring.problems import Problem
from nurture.authoring.sources import DEFAULT_KIND, yaml_files
from nurture.authoring.yamlsource import LineMap, YamlSourceError, load_yaml
from nurture.sequences import spec as schema
from nurture.sequences.versions import LoadedSequence

SEQUENCE_KIND = DEFAULT_KIND


@dataclass(frozen=True)
class SourcedSequence:
    """A loaded sequence plus the line of every value in its file (for later checks)."""

    loaded: LoadedSequence
    lines: LineMap

    @property
    def path(self) -> str:
        return self.loaded.path

    def line(self, *loc: str | int) -> int:
        return self.lines.line_for(loc)


def load_sequences(path: Path) -> tuple[list[LoadedSequence], list[Problem]]:
    """Every sequence in a folder (``*.yaml``/``*.yml``, recursively) or one file."""
    sourced, problems = load_sources([path])
    return [s.loaded for s in sourced], problems


def load_sources(paths: Iterable[Path]) -> tuple[list[SourcedSequence], list[Problem]]:
    """Sequences with their line maps, from folders and files; other ``kind:`` files skipped."""
    sequences: list[SourcedSequence] = []
    problems: list[Problem] = []
    for file in _files(paths, problems):
        sequence = _load_file(file, problems)
        if sequence is not None:
            sequences.append(sequence)
    return sequences, problems


def _files(paths: Iterable[Path], problems: list[Problem]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if not path.exists():
            problems.append(Problem(str(path), 0, "no such file or directory"))
        else:
            files.extend(yaml_files(path))
    return files


def _load_file(file: Path, problems: list[Problem]) -> SourcedSequence | None:
    try:
        data, lines = load_yaml(file)
    except YamlSourceError as exc:
        problems.extend(exc.problems)
        return None
    if not isinstance(data, dict):
        what = "an empty file" if data is None else f"a {type(data).__name__}"
        problems.append(Problem(str(file), lines.line_for(()), f"expected a mapping, got {what}"))
        return None
    kind = data.pop("kind", SEQUENCE_KIND)
    if kind != SEQUENCE_KIND:
        return None  # scoring and lifecycle files live in the same folder
    try:
        spec = schema.SequenceSpec.model_validate(data, context=schema.AUTHORED)
    except ValidationError as exc:
        problems.extend(validation_problems(exc, str(file), lines))
        return None
    return SourcedSequence(LoadedSequence(spec=spec, path=str(file)), lines)


def validation_problems(exc: ValidationError, file: str, lines: LineMap) -> list[Problem]:
    """One problem per pydantic error, at the line of the field it names."""
    return errors.validation_problems(exc, file, lines, _suggestion)


def _suggestion(name: str) -> str:
    close = difflib.get_close_matches(name, sorted(_field_names()), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _field_names() -> set[str]:
    names: set[str] = {"kind"}
    for model in vars(schema).values():
        if isinstance(model, type) and issubclass(model, BaseModel):
            names.update(f.alias or n for n, f in model.model_fields.items())
    return names
