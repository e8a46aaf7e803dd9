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
# Limits on one YAML file (docs/authoring.md, "Limits"): sequences, scoring.yaml and
# lifecycle.yaml are all read here, by validate, the catalog, the web and the worker.
# Bytes of one file (read no further): the largest shipped sequence is about 5 KB.
MAX_YAML_BYTES = 1_000_000
# Levels of nesting, written or through aliases: authored YAML uses about 8, and PyYAML's
# composer recurses once per level (5,000 levels ended in a RecursionError traceback).
MAX_DEPTH = 64
# Values in a document once every alias is expanded: nine aliases of nine aliases of ...
# ("billion laughs") made a 1 KB file take minutes and gigabytes to build.
MAX_NODES = 100_000


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
        with path.open("rb") as file:
            data = file.read(MAX_YAML_BYTES + 1)  # never more: a link to /dev/zero ends too
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if len(data) > MAX_YAML_BYTES:
            raise _too_big(str(path), data) from exc  # cut inside a character
        raise YamlSourceError([Problem(str(path), 0, f"not UTF-8 text: {exc.reason}")]) from exc
    except OSError as exc:
        raise YamlSourceError([Problem(str(path), 0, f"cannot read: {exc.strerror}")]) from exc
    if len(data) > MAX_YAML_BYTES:
        raise _too_big(str(path), data)
    return parse_yaml(text, str(path))


def parse_yaml(text: str, file: str) -> tuple[Any, LineMap]:
    """Parse YAML text (named ``file`` in problems) into plain data and its line map."""
    if len(text) > MAX_YAML_BYTES:
        raise _too_big(file, text.encode("utf-8"))
    try:
        _check_shape(text, file)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise YamlSourceError([_syntax_problem(exc, file)]) from exc
    except yaml.YAMLError as exc:
        raise YamlSourceError([Problem(file, 1, f"invalid YAML: {exc}")]) from exc
    except RecursionError as exc:  # _check_shape bounds the nesting; never a traceback
        raise YamlSourceError([Problem(file, 1, "nested too deeply")]) from exc
    if root is None:
        return None, LineMap({(): 1})
    builder = _Builder(file)
    data = builder.build(root, ())
    if builder.problems:
        raise YamlSourceError(builder.problems)
    return data, LineMap(builder.lines)


def _too_big(file: str, data: bytes) -> YamlSourceError:
    line = data.count(b"\n", 0, MAX_YAML_BYTES) + 1
    return YamlSourceError(
        [Problem(file, line, f"the file is larger than {MAX_YAML_BYTES:,} bytes (the limit)")]
    )


def _check_shape(text: str, file: str) -> None:
    """Refuse, before anything is composed, a document nested deeper than MAX_DEPTH or
    holding more than MAX_NODES values once its aliases are expanded. A pass over the
    parser's events, which needs no recursion; the composer and the builder recurse."""
    open_sizes: list[int] = []  # values inside each open sequence or mapping, so far
    open_anchors: list[str | None] = []
    expands_to: dict[str, int] = {}  # anchor -> values an alias to it stands for
    values = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            if len(open_sizes) >= MAX_DEPTH:
                raise _shape_problem(file, event, f"nested deeper than {MAX_DEPTH} levels")
            open_sizes.append(1)
            open_anchors.append(event.anchor)
            size = 1
        elif isinstance(event, yaml.CollectionEndEvent):
            size, anchor = open_sizes.pop(), open_anchors.pop()
            if anchor is not None:
                expands_to[anchor] = size
            if open_sizes:
                open_sizes[-1] += size
            continue
        elif isinstance(event, yaml.ScalarEvent | yaml.AliasEvent):
            if isinstance(event, yaml.AliasEvent) and event.anchor in open_anchors:
                raise _shape_problem(file, event, f"recursive alias *{event.anchor}")
            alias = isinstance(event, yaml.AliasEvent)
            size = expands_to.get(event.anchor or "", 1) if alias else 1
            if not alias and event.anchor is not None:
                expands_to[event.anchor] = 1
            if open_sizes:
                open_sizes[-1] += size
        else:
            continue
        values += size
        if values > MAX_NODES:
            message = f"more than {MAX_NODES:,} values once its aliases are expanded"
            raise _shape_problem(file, event, message)


def _shape_problem(file: str, event: yaml.Event, message: str) -> YamlSourceError:
    line = event.start_mark.line + 1 if event.start_mark else 1
    return YamlSourceError([Problem(file, line, message)])


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
        except (yaml.YAMLError, ValueError) as exc:  # ValueError: an int of 5,000 digits
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
