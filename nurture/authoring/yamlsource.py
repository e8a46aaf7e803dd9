"""YAML that remembers where each value was written, so errors can name ``file:line``.

PyYAML's composer keeps a mark on every node; we build plain Python data from the nodes
ourselves and record the line of every mapping key and list item on the way. Duplicate
keys (which PyYAML silently resolves to the last one) are errors here."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nurture.authoring.problems import Problem

Loc = tuple[str | int, ...]
MAX_DEPTH = 100  # aliases can nest a document without bound; authored YAML never needs this


class YamlSourceError(Exception):
    """The file is not usable YAML: unreadable, a syntax error, or duplicate keys."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


@dataclass
class LineMap:
    """1-based line numbers of the values in a document, by path (keys and list indexes)."""

    lines: dict[Loc, int] = field(default_factory=dict)

    def line_for(self, loc: Iterable[Any]) -> int:
        """The line of ``loc``, or of its deepest known ancestor.

        Unknown path parts are skipped rather than ending the walk, so pydantic locations
        with union tags in the middle (``'function-after[...]'``) still land on a line."""
        known: Loc = ()
        for part in loc:
            candidate = (*known, part)
            if candidate in self.lines:
                known = candidate
            elif isinstance(part, str) and part.isdigit() and (*known, int(part)) in self.lines:
                known = (*known, int(part))
        return self.lines.get(known, 1)

    def has(self, loc: Loc) -> bool:
        return loc in self.lines


def load_yaml(path: Path) -> tuple[Any, LineMap]:
    """Parse one YAML file into plain data and its line map; raise YamlSourceError."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise YamlSourceError([Problem(str(path), 0, f"not UTF-8 text: {exc.reason}")]) from exc
    except OSError as exc:
        raise YamlSourceError([Problem(str(path), 0, f"cannot read: {exc.strerror}")]) from exc
    return parse_yaml(text, str(path))


def parse_yaml(text: str, file: str) -> tuple[Any, LineMap]:
    """Parse YAML text (named ``file`` in problems) into plain data and its line map."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise YamlSourceError([_syntax_problem(exc, file)]) from exc
    except yaml.YAMLError as exc:
        raise YamlSourceError([Problem(file, 1, f"invalid YAML: {exc}")]) from exc
    if root is None:
        return None, LineMap({(): 1})
    builder = _Builder(file)
    data = builder.build(root, ())
    if builder.problems:
        raise YamlSourceError(builder.problems)
    return data, LineMap(builder.lines)


def _syntax_problem(exc: yaml.MarkedYAMLError, file: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else 1
    parts = [exc.context or "", exc.problem or ""]
    message = ", ".join(p for p in parts if p) or "invalid YAML"
    if "expected <block end>" in message or "mapping values are not allowed" in message:
        message += " (check the indentation)"
    return Problem(file, line, f"YAML syntax error: {message}")


class _Builder:
    """Plain data from composed nodes, recording lines and refusing duplicate keys."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: dict[Loc, int] = {}
        self.problems: list[Problem] = []
        self._scalars = yaml.SafeLoader("")

    def build(self, node: yaml.Node, loc: Loc, depth: int = 0) -> Any:
        self.lines.setdefault(loc, node.start_mark.line + 1)
        if depth > MAX_DEPTH:
            self._problem(node, "nested too deeply (recursive alias?)")
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, loc, depth)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*loc, i), depth + 1) for i, item in enumerate(node.value)]
        try:
            return self._scalars.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self._problem(node, f"bad value: {exc}")
            return None

    def _mapping(self, node: yaml.MappingNode, loc: Loc, depth: int) -> dict[Any, Any]:
        try:
            self._scalars.flatten_mapping(node)  # resolves '<<' merge keys
        except yaml.YAMLError as exc:
            self._problem(node, f"bad merge key: {exc}")
        result: dict[Any, Any] = {}
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = self._key(key_node)
            line = key_node.start_mark.line + 1
            if key in first_line:
                self._problem(key_node, f"duplicate key {key!r} (first at line {first_line[key]})")
                continue
            first_line[key] = line
            self.lines[(*loc, key)] = line
            result[key] = self.build(value_node, (*loc, key), depth + 1)
        return result

    def _key(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            self._problem(node, "a mapping key must be a plain value, not a list or mapping")
            return f"<key at line {node.start_mark.line + 1}>"
        # Keys are names here: keep their text (YAML 1.1 would read `on:` as True, `1:` as 1).
        return str(node.value)

    def _problem(self, node: yaml.Node, message: str) -> None:
        self.problems.append(Problem(self.file, node.start_mark.line + 1, message))
