"""`nurture validate` checks scoring.yaml: every problem at its file:line."""

from __future__ import annotations

from pathlib import Path

from support import REPO
from typer.testing import CliRunner

from nurture.cli import app
from nurture.program.validate import validate_paths
from nurture.scoring.loading import load_rules

ROOT = REPO
runner = CliRunner()

BROKEN = """\
kind: scoring
half_life: 3 business days
fit:
  decision_maker:
    points: 15
    if: {attribute: title, matches: '(VP|Chief'}
  Big Co:
    points: 5
    if: {attribute: company_size, gte: 1000}
engagement:
  blog_visit:
    event: page_vist
    url: /blog/*
    points: 2
    cap: {count: 3, per: soon}
  pricing:
    event: page_visit
    urls: /pricing
    points: 10
  decision_maker:
    event: demo_requested
    points: 30
negative:
  unsubscribed:
    event: unsubscribed
    points: 25
  silence:
    silent_for: 90d
    event: opened
    points: -5
"""


def problems(folder: Path) -> list[str]:
    report = validate_paths([folder], ROOT / "templates", "en")
    return [str(p) for p in report.problems]


def test_the_shipped_rules_have_no_problems() -> None:
    report = validate_paths([ROOT / "sequences"], ROOT / "templates", "en")
    assert [str(p) for p in report.problems] == []
    rules = load_rules(ROOT / "sequences" / "scoring.yaml")
    assert len(rules.attribute_rules) >= 8 and len(rules.event_rules) >= 15


def test_every_problem_is_named_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "scoring.yaml"
    path.write_text(BROKEN, encoding="utf-8")
    assert problems(tmp_path) == [
        f"{path}:2: half_life: use calendar time such as '7d' or '12h', not '3 business days'",
        f"{path}:6: fit.decision_maker.if.matches: bad regular expression '(VP|Chief': "
        "missing ), unterminated subpattern at position 0",
        f"{path}:7: fit.Big Co: rule name 'Big Co': use lower-case letters, digits, '-' and '_' "
        "(at most 120 characters)",
        f"{path}:12: warning: engagement.blog_visit.event: unknown event type 'page_vist' "
        "(did you mean 'page_visit'?); no event of that type is recorded unless your site sends it",
        f"{path}:15: engagement.blog_visit.cap.per: bad duration 'soon': use a number and a unit, "
        "e.g. '3d', '12h', '90m', '1w' or '2 business days'",
        f"{path}:18: engagement.pricing: unknown field 'urls' (did you mean 'url'?)",
        f"{path}:20: engagement.decision_maker: rule name 'decision_maker' is already used in "
        "fit (line 4): names must be unique across sections",
        f"{path}:26: negative.unsubscribed.points: negative rules take points below 0, got 25",
        f"{path}:27: negative.silence: a negative rule needs exactly one of event, if, "
        "silent_for; got event, silent_for",
    ]


def test_duplicate_rule_in_a_section_and_a_syntax_error_are_reported_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "scoring.yaml"
    path.write_text(
        "kind: scoring\nnegative:\n  dup: {event: bounced, points: -1}\n"
        "  dup: {event: bounced, points: -2}\n",
        encoding="utf-8",
    )
    assert problems(tmp_path) == [f"{path}:4: duplicate key 'dup' (first at line 3)"]


def test_cli_names_file_and_line_and_fails(tmp_path: Path) -> None:
    path = tmp_path / "scoring.yaml"
    path.write_text("kind: scoring\nfit:\n  opener:\n    event: opened\n    points: 1\n")
    result = runner.invoke(app, ["validate", str(path), "--templates", str(ROOT / "templates")])
    assert result.exit_code == 1
    assert f"{path}:3: fit.opener: missing required field 'if'" in result.output
    assert (
        f"{path}:4: fit.opener: unknown field 'event': fit rules test who the lead is "
        "(with 'if'); rules on events go in engagement"
    ) in result.output


def test_a_scoring_file_under_another_name_is_not_used(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("kind: scoring\nengagement:\n  o: {event: opened, points: 1}\n")
    assert problems(path) == [
        f"{path}:1: warning: scoring rules are read only from scoring.yaml or scoring.yml in "
        "the sequences folder: this file is not used"
    ]
