"""Authored YAML cannot hang or exhaust the process that reads it (validate, the catalog,
the worker): alias bombs, deep nesting, huge files and absurd waits are problems at their
file:line, never a traceback, a hang or a MemoryError."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from nurture.authoring.catalog import load_sequences
from nurture.authoring.problems import Problem
from nurture.authoring.validate import validate_path
from nurture.authoring.yamlsource import YamlSourceError, load_yaml, parse_yaml
from nurture.lifecycle.loading import load_lifecycle_file
from nurture.scoring.loader import check_scoring_file


def laughs(levels: int = 9) -> str:
    """The "billion laughs": each level nine aliases of the one before (9 ** 9 values)."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        aliases = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"a{level}: &a{level} [{aliases}]")
    return "\n".join(lines) + "\n"


def problem_of(text: str) -> Problem:
    started = time.monotonic()
    with pytest.raises(YamlSourceError) as caught:
        parse_yaml(text, "f.yaml")
    assert time.monotonic() - started < 5
    assert len(caught.value.problems) == 1
    return caught.value.problems[0]


def test_an_alias_bomb_is_a_problem_at_the_alias_that_passes_the_limit() -> None:
    problem = problem_of(laughs())
    # a5 holds 9 ** 6 = 531,441 values: its aliases pass 100,000 on line 6.
    assert (problem.file, problem.line) == ("f.yaml", 6)
    assert "more than 100,000 values once its aliases are expanded" in problem.message


def test_a_merge_key_bomb_is_refused_too() -> None:
    text = "a0: &a0 {k0: 1, k1: 2, k2: 3, k3: 4, k4: 5, k5: 6, k6: 7, k7: 8, k8: 9, k9: 10}\n"
    for level in range(1, 7):
        merged = ", ".join(f"m{i}: {{<<: *a{level - 1}}}" for i in range(10))
        text += f"a{level}: &a{level} {{{merged}}}\n"
    assert "aliases" in problem_of(text).message


@pytest.mark.parametrize(
    "text",
    [
        "a: " + "[" * 5000 + "]" * 5000 + "\n",
        "a: " + "{k: " * 5000 + "1" + "}" * 5000 + "\n",
        "- " * 5000 + "x\n",
        "a:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(100)) + "  " * 101 + "x\n",
    ],
    ids=["flow lists", "flow maps", "block lists", "indented maps"],
)
def test_deep_nesting_is_a_problem_not_a_recursion_error(text: str) -> None:
    problem = problem_of(text)
    assert problem.message == "nested deeper than 64 levels"
    assert problem.line >= 1


def test_nesting_up_to_the_limit_reads() -> None:
    data, _ = parse_yaml("a: " + "[" * 63 + "1" + "]" * 63 + "\n", "f.yaml")
    for _ in range(64):  # one mapping and 63 lists: 64 levels
        data = data["a"] if isinstance(data, dict) else data[0]
    assert data == 1
    with pytest.raises(YamlSourceError, match="nested deeper than 64"):
        parse_yaml("a: " + "[" * 64 + "1" + "]" * 64 + "\n", "f.yaml")


def test_a_recursive_alias_is_a_problem() -> None:
    problem = problem_of("a: &a [1, *a]\n")
    assert problem.line == 1 and "recursive alias *a" in problem.message


def test_ordinary_anchors_and_merge_keys_still_read() -> None:
    text = (
        "defaults: &defaults {template: drip/welcome, subject: Hi}\n"
        "steps:\n"
        "  - email: {<<: *defaults, locale: ko}\n"
        "  - email: *defaults\n"
        "list: &items [1, 2, 3]\n"
        "again: [*items, *items]\n"
    )
    data, lines = parse_yaml(text, "f.yaml")
    assert data["steps"][0]["email"] == {
        "template": "drip/welcome",
        "subject": "Hi",
        "locale": "ko",
    }
    assert data["steps"][1]["email"] == {"template": "drip/welcome", "subject": "Hi"}
    assert data["again"] == [[1, 2, 3], [1, 2, 3]]
    assert lines.line_for(("steps", 1)) == 4


def test_a_file_over_a_megabyte_is_a_problem_where_it_passes_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    line = "# " + "x" * 998 + "\n"  # 1,001 bytes
    path.write_text("key: big\n" + line * 1100)
    with pytest.raises(YamlSourceError) as caught:
        load_yaml(path)
    problem = caught.value.problems[0]
    assert problem.file == str(path) and problem.line == 1000  # byte 1,000,001 is there
    assert "larger than 1,000,000 bytes" in problem.message


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_link_to_an_endless_file_is_not_read_to_the_end(tmp_path: Path) -> None:
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    started = time.monotonic()
    with pytest.raises(YamlSourceError, match="larger than"):
        load_yaml(tmp_path / "zero.yaml")
    assert time.monotonic() - started < 5


def test_an_integer_too_long_to_read_is_a_bad_value() -> None:
    problem = problem_of("a: 1\nb: " + "7" * 5000 + "\n")
    assert problem.line == 2 and problem.message.startswith("bad value")


def test_every_yaml_loader_reports_the_bomb(tmp_path: Path) -> None:
    bomb = laughs()
    sequences = tmp_path / "sequences"
    sequences.mkdir()
    (sequences / "s.yaml").write_text(bomb)
    (tmp_path / "scoring.yaml").write_text("kind: scoring\n" + bomb)
    (tmp_path / "lifecycle.yaml").write_text("kind: lifecycle\n" + bomb)
    _, problems = load_sequences(sequences)
    assert [(p.line, "aliases" in p.message) for p in problems] == [(6, True)]
    assert [p.line for p in validate_path(sequences, tmp_path, "en") if p.is_error] == [6]
    scoring = check_scoring_file(tmp_path / "scoring.yaml")
    assert [(p.line, "aliases" in p.message) for p in scoring.problems] == [(7, True)]
    lifecycle, problems = load_lifecycle_file(tmp_path / "lifecycle.yaml")
    assert lifecycle is None
    assert [(p.line, "aliases" in p.message) for p in problems] == [(7, True)]
