"""The YAML files of a program folder, and the ``kind:`` each one declares."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from nurture.authoring.yamlsource import YamlSourceError, load_yaml

YAML_SUFFIXES = (".yaml", ".yml")
# A file without ``kind:`` is a sequence: most files of the folder are.
DEFAULT_KIND = "sequence"


def yaml_files(path: Path) -> list[Path]:
    """The YAML files under ``path`` (sorted, recursively), or ``[path]`` for a single file."""
    if path.is_dir():
        found = (p for p in path.rglob("*") if p.suffix in YAML_SUFFIXES and p.is_file())
        return sorted(found)
    return [path]


def kind_of(file: Path) -> str | None:
    """The ``kind:`` of a YAML file (``sequence`` when absent); None if it does not parse."""
    try:
        data, _ = load_yaml(file)
    except YamlSourceError:
        return None
    if not isinstance(data, dict):
        return None
    return str(data.get("kind", DEFAULT_KIND))


def files_of_kind(paths: Iterable[Path], kind: str) -> list[Path]:
    """The YAML files under ``paths`` whose ``kind:`` is ``kind``."""
    found: list[Path] = []
    for path in paths:
        if path.exists():
            found += [f for f in yaml_files(path) if kind_of(f) == kind]
    return found
