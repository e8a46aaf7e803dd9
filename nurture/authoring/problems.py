"""A problem found in authored content, named by ``file:line`` like a compiler error."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One error or warning at a place in a file. Line 0 means the file as a whole."""

    file: str
    line: int
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line > 0 else self.file
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{where}: {prefix}{self.message}"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def to_json(self) -> dict[str, object]:
        """The problem as JSON data: file, line, message, severity."""
        return asdict(self)

    def relative_to(self, base: Path) -> Problem:
        """The same problem with its file shown relative to ``base`` when it lies below it."""
        return Problem(display_path(self.file, base), self.line, self.message, self.severity)


def display_path(file: str | Path, base: Path | None = None) -> str:
    """``file`` relative to ``base`` (default: the working directory) when it lies below it."""
    path = Path(file)
    if not path.is_absolute():
        return str(file)
    try:
        return str(path.relative_to((base or Path.cwd()).resolve()))
    except ValueError:
        return os.fspath(path)


def sort_key(problem: Problem) -> tuple[str, int, str]:
    """Problems in reading order: by file, then line."""
    return (problem.file, problem.line, problem.message)


def has_errors(problems: list[Problem]) -> bool:
    return any(p.is_error for p in problems)
