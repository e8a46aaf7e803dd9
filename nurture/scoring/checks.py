"""``nurture validate`` for scoring: every ``kind: scoring`` file among the given paths."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from nurture.authoring.problems import Problem
from nurture.authoring.sources import yaml_files
from nurture.authoring.yamlsource import YamlSourceError, load_yaml
from nurture.scoring.loading import SCORING_FILES, check_scoring_data
from nurture.scoring.spec import SCORING_KIND


def check_scoring_files(paths: Iterable[Path]) -> list[Problem]:
    """Problems in the scoring files found in folders (recursively) or given as files.

    Files that are not ``kind: scoring`` are left to the sequence checks, and so are YAML
    syntax errors (reported once, there)."""
    problems: list[Problem] = []
    for path in paths:
        if not path.exists():
            continue  # reported by the sequence loader
        for file in yaml_files(path):
            problems += _check(file)
    return problems


def _check(file: Path) -> list[Problem]:
    try:
        data, lines = load_yaml(file)
    except YamlSourceError:
        return []
    if not isinstance(data, dict) or data.get("kind") != SCORING_KIND:
        return []
    problems = check_scoring_data(data, lines, str(file)).problems
    if file.name not in SCORING_FILES:
        message = (
            f"scoring rules are read only from {' or '.join(SCORING_FILES)} in the sequences "
            "folder: this file is not used"
        )
        problems.append(Problem(str(file), lines.line_for(("kind",)), message, "warning"))
    return problems
