"""Load sequence files from a folder (or one file) into specs, with ``file:line`` problems."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from nurture.authoring.problems import Problem
from nurture.authoring.yamlsource import LineMap, Loc, YamlSourceError, load_yaml
from nurture.sequences import spec as schema
from nurture.sequences.versions import LoadedSequence

YAML_SUFFIXES = (".yaml", ".yml")
SEQUENCE_KIND = "sequence"
_PREFIXES = ("Value error, ", "Assertion failed, ")
# Errors whose message is clearer with the offending value appended.
_SHOW_INPUT = {"enum", "literal_error", "string_type", "int_parsing", "float_parsing", "bool_type"}


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


def sequence_files(path: Path) -> list[Path]:
    """The YAML files under ``path`` (sorted), or ``[path]`` for a single file."""
    if path.is_dir():
        found = (p for p in path.rglob("*") if p.suffix in YAML_SUFFIXES and p.is_file())
        return sorted(found)
    return [path]


def _files(paths: Iterable[Path], problems: list[Problem]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if not path.exists():
            problems.append(Problem(str(path), 0, "no such file or directory"))
        else:
            files.extend(sequence_files(path))
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
    return [
        Problem(file, lines.line_for(error["loc"]), describe_error(error))
        for error in exc.errors(include_url=False)
    ]


def describe_error(error: Any) -> str:
    """``steps[2].wait: bad duration 'soon': ...`` from one pydantic error."""
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    message = str(error["msg"])
    for prefix in _PREFIXES:
        message = message.removeprefix(prefix)
    if kind == "missing":
        return _at(loc[:-1], f"missing required field '{loc[-1]}'")
    if kind == "extra_forbidden":
        return _at(loc[:-1], f"unknown field '{loc[-1]}'{_suggestion(str(loc[-1]))}")
    if kind in _SHOW_INPUT:
        message = f"{message}, got {error.get('input')!r}"
    return _at(loc, message)


def format_loc(loc: Sequence[str | int]) -> str:
    """``('steps', 2, 'wait')`` -> ``steps[2].wait``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not _is_tag(part):
            text += f".{part}" if text else part
    return text


def _at(loc: Loc, message: str) -> str:
    where = format_loc(loc)
    return f"{where}: {message}" if where else message


def _is_tag(part: str) -> bool:
    # pydantic puts validator and union-member names in locations: not fields a user wrote.
    return "[" in part or part in {"str", "int", "float", "bool", "list", "dict"}


def _suggestion(name: str) -> str:
    close = difflib.get_close_matches(name, sorted(_field_names()), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _field_names() -> set[str]:
    names: set[str] = {"kind"}
    for model in vars(schema).values():
        if isinstance(model, type) and issubclass(model, BaseModel):
            names.update(f.alias or n for n, f in model.model_fields.items())
    return names
