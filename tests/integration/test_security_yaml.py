"""Authored YAML cannot hang or exhaust the process that reads it (validate, the catalog,
the worker): alias bombs, deep nesting, huge files and absurd waits are problems at their
file:line, never a traceback, a hang or a MemoryError."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from support.engine import MONDAY, SEQUENCES, TEMPLATES, engine_settings

from nurture.authoring.problems import Problem
from nurture.authoring.yamlsource import YamlSourceError, load_yaml, parse_yaml
from nurture.bootstrap import build_runtime
from nurture.core.durations import Duration, parse_duration
from nurture.funnel.loading import load_lifecycle_file
from nurture.program.loading import AuthoringError
from nurture.program.validate import validate_path
from nurture.scoring.loading import check_scoring_file
from nurture.sequences.loading import load_sequences
from nurture.sequences.timing import add_wait


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


SEQUENCE = """\
key: s
name: S
audience:
  personas: [finance_leader]
  journey_stages: [awareness]
steps:
  - id: pause
    wait: {wait}
  - exit: done
"""


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


# -- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("3650d", timedelta(days=3650)),
        ("521w", timedelta(weeks=521)),
        ("87600h", timedelta(hours=87600)),
        ("5256000m", timedelta(minutes=5256000)),
        ("0003650d", timedelta(days=3650)),
    ],
)
def test_waits_up_to_ten_years_read(text: str, span: timedelta) -> None:
    assert parse_duration(text).span == span


@pytest.mark.parametrize(
    "text",
    ["3651d", "522w", "87601h", "5256001m", "1000000000d", "999999999999999w", "9" * 5000 + "d"],
)
def test_longer_waits_are_refused_with_the_limit(text: str) -> None:
    with pytest.raises(ValueError, match=r"at most 3650d \(about ten years\)"):
        parse_duration(text)


def test_business_days_are_bounded() -> None:
    assert parse_duration("1000 business days").business_days == 1000
    with pytest.raises(ValueError, match="at most 1000 business days"):
        parse_duration("1001 business days")
    with pytest.raises(ValueError, match="at most 1000 business days"):
        parse_duration("99999999999999999999 business days")


def test_validate_names_the_line_of_an_absurd_wait(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SEQUENCE.format(wait="1000000000d"))
    problems = [p for p in validate_path(tmp_path, TEMPLATES, "en") if p.is_error]
    assert [str(p) for p in problems] == [
        f"{path}:8: steps[0].wait: bad duration '1000000000d': at most 3650d (about ten years)"
    ]


def test_the_engine_refuses_the_catalog_instead_of_crashing(tmp_path: Path, db_url: str) -> None:
    # `nurture run`, the tick and `nurture leads import` all load the catalog first.
    sequences = tmp_path / "sequences"
    shutil.copytree(SEQUENCES, sequences)
    drip = sequences / "drip.yaml"
    drip.write_text(drip.read_text().replace("wait: 3d", "wait: 1000000000d"))
    rt = build_runtime(engine_settings(db_url, sequences_dir=sequences))
    try:
        with pytest.raises(AuthoringError) as caught:
            rt.load_program(MONDAY)
    finally:
        rt.close()
    assert [(p.file, p.line) for p in caught.value.problems] == [(str(drip), 21)]
    assert "at most 3650d" in caught.value.problems[0].message


@pytest.mark.parametrize(
    ("start", "wait"),
    [
        (datetime(9999, 12, 25, tzinfo=UTC), Duration(span=timedelta(days=30))),
        (datetime(9999, 12, 1, tzinfo=UTC), Duration(business_days=20)),
        (datetime(9999, 12, 31, 23, tzinfo=ZoneInfo("America/New_York")), Duration()),
    ],
)
def test_a_wait_past_the_year_9999_is_a_value_error(start: datetime, wait: Duration) -> None:
    with pytest.raises(ValueError, match="ends after the year 9999"):
        add_wait(start, wait, ZoneInfo("Asia/Seoul"))


def test_a_wait_far_from_the_end_of_time_still_adds() -> None:
    start = datetime(9989, 1, 1, tzinfo=UTC)
    zone = ZoneInfo("UTC")
    assert add_wait(start, Duration(span=timedelta(days=3650)), zone) == datetime(
        9998, 12, 30, tzinfo=UTC
    )
    assert add_wait(start, Duration(business_days=1000), zone).year == 9992
