"""pydantic's validation errors as ``file:line`` problems a marketer can act on."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from nurture.authoring.problems import Problem
from nurture.authoring.yamlsource import LineMap, Loc

_PREFIXES = ("Value error, ", "Assertion failed, ")
# Errors whose message is clearer with the offending value appended.
_SHOW_INPUT = {"enum", "literal_error", "string_type", "int_parsing", "float_parsing", "bool_type"}
Suggest = Callable[[str], str]


def no_suggestion(_: str) -> str:
    return ""


def validation_problems(
    exc: ValidationError, file: str, lines: LineMap, suggest: Suggest = no_suggestion
) -> list[Problem]:
    """One problem per pydantic error, at the line of the field it names."""
    return [
        Problem(file, lines.line_for(error["loc"]), describe_error(error, suggest))
        for error in exc.errors(include_url=False)
    ]


def describe_error(error: Any, suggest: Suggest = no_suggestion) -> str:
    """``steps[2].wait: bad duration 'soon': ...`` from one pydantic error; ``suggest``
    names a close field for an unknown one (`` (did you mean 'subject'?)``)."""
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    message = str(error["msg"])
    for prefix in _PREFIXES:
        message = message.removeprefix(prefix)
    if kind == "missing":
        return _at(loc[:-1], f"missing required field '{loc[-1]}'")
    if kind == "extra_forbidden":
        return _at(loc[:-1], f"unknown field '{loc[-1]}'{suggest(str(loc[-1]))}")
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
