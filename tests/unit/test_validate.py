"""`nurture validate`: every problem named at its file:line, exit status for CI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support import FIXTURES as ALL_FIXTURES
from typer.testing import CliRunner

from nurture.authoring.problems import Problem, display_path
from nurture.authoring.yamlsource import YamlSourceError, parse_yaml
from nurture.cli import app
from nurture.program.validate import validate_path, validate_paths
from nurture.sequences.loading import load_sequences
from nurture.sequences.versions import spec_from_document

FIXTURES = ALL_FIXTURES / "authoring"
GOOD = FIXTURES / "good"
BROKEN = FIXTURES / "broken"
BROKEN_TEMPLATES = BROKEN / "templates"

runner = CliRunner()


def problems_in(path: Path, templates: Path = BROKEN_TEMPLATES) -> list[Problem]:
    return validate_path(path, templates, "en")


def errors_in(path: Path, templates: Path = BROKEN_TEMPLATES) -> list[str]:
    return [str(p) for p in problems_in(path, templates) if p.severity == "error"]


def only_error(path: Path) -> str:
    errors = errors_in(path)
    assert len(errors) == 1, errors
    return errors[0]


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_good_fixtures_have_no_problems() -> None:
    assert problems_in(GOOD / "sequences", GOOD / "templates") == []


def test_yaml_syntax_error_at_its_line() -> None:
    path = BROKEN / "syntax_error.yaml"
    error = only_error(path)
    assert error.startswith(f"{path}:10: YAML syntax error")
    assert "indentation" in error


def test_bad_duration_names_the_step_field() -> None:
    path = BROKEN / "bad_duration.yaml"
    assert only_error(path).startswith(f"{path}:12: steps[1].wait: bad duration 'soon': use ")


def test_unknown_template_at_the_template_line() -> None:
    path = BROKEN / "unknown_template.yaml"
    error = only_error(path)
    assert error.startswith(f"{path}:14: unknown template 'demo/missing'")


def test_undefined_variable_names_template_line_and_step_line() -> None:
    path = BROKEN / "undefined_variable.yaml"
    errors = errors_in(path)
    template = BROKEN_TEMPLATES / "demo" / "undefined.html"
    assert len(errors) == 2, errors  # one per broken line, not one per sample persona
    assert errors[0].startswith(f"{template}:4: undefined variable")
    assert "favourite_colour" in errors[0]
    assert f"step 'colour' at {path}:7" in errors[0]
    assert errors[1].startswith(f"{path}:14: step 'subject-typo' subject: undefined variable")
    assert "frist_name" in errors[1]


def test_unreachable_step_after_exit() -> None:
    path = BROKEN / "unreachable.yaml"
    assert (
        only_error(path) == f"{path}:12: step 'orphan' is unreachable: no path from the first step"
    )


def test_same_persona_and_stage_in_two_files() -> None:
    folder = BROKEN / "overlap"
    errors = errors_in(folder)
    first, second = folder / "a_first.yaml", folder / "b_second.yaml"
    # c_recycled.yaml claims the same pair for other lifecycle stages: no clash.
    assert errors == [
        f"{second}:4: audience overlaps sequence 'overlap-first' ({first}:3): "
        "both claim (it_director, consideration)"
    ]


def test_bad_time_zone_with_suggestion() -> None:
    path = BROKEN / "bad_timezone.yaml"
    error = only_error(path)
    assert error.startswith(f"{path}:8: send_window.timezone: unknown time zone 'Asia/Seol'")
    assert "did you mean 'Asia/Seoul'" in error


def test_branch_to_unknown_step() -> None:
    path = BROKEN / "unknown_branch.yaml"
    assert only_error(path) == f"{path}:14: steps[1].branch.then: no step 'demo-request'"


def test_opened_must_name_an_email_step() -> None:
    path = BROKEN / "opened_wait.yaml"
    assert only_error(path) == (
        f"{path}:17: opened: step 'pause' is a wait step, not an email step"
    )


def test_duplicate_yaml_key() -> None:
    path = BROKEN / "duplicate_key.yaml"
    assert only_error(path) == f"{path}:11: duplicate key 'template' (first at line 9)"


SEQUENCE = """\
key: {key}
name: Test
audience:
  personas: [finance_leader]
  journey_stages: [{stage}]
steps:
"""


def test_duplicate_sequence_key_across_files(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", SEQUENCE.format(key="same", stage="awareness") + "  - exit: x\n")
    write(tmp_path, "b.yaml", SEQUENCE.format(key="same", stage="decision") + "  - exit: x\n")
    assert errors_in(tmp_path) == [
        f"{tmp_path / 'b.yaml'}:1: sequence key 'same' is already used by {tmp_path / 'a.yaml'}:1"
    ]


def test_duplicate_step_ids_loops_and_step_map(tmp_path: Path) -> None:
    text = SEQUENCE.format(key="s", stage="awareness") + (
        "  - id: a\n"  # 7
        "    wait: 1d\n"
        "  - id: a\n"  # 9
        "    exit: x\n"
        "versioning:\n"
        "  on_change: move\n"
        "  step_map: {old: gone}\n"  # 13
    )
    path = write(tmp_path, "s.yaml", text)
    assert errors_in(path) == [
        f"{path}:9: duplicate step id 'a' (first at line 7)",
        f"{path}:13: versioning.step_map: 'old' maps to no step 'gone'",
    ]
    loop = SEQUENCE.format(key="loop", stage="awareness") + (
        "  - id: check\n"  # 7
        "    branch: {if: {event: demo_request}, then: check}\n"
    )
    path = write(tmp_path, "loop.yaml", loop)
    assert errors_in(path) == [
        f"{path}:7: loop without a wait: steps check would repeat without pause"
    ]


def test_expression_conditions(tmp_path: Path) -> None:
    text = SEQUENCE.format(key="s", stage="awareness") + (
        "  - branch:\n"
        "      if: {expr: 'lead.company_size >'}\n"  # 8
        "      then: b\n"
        "  - id: b\n"
        "    branch:\n"
        "      if: {expr: 'company_size > 10'}\n"  # 12
        "      then: c\n"
        "  - id: c\n"
        "    branch:\n"
        "      if: {expr: 'lead.__class__'}\n"  # 16
        "      then: d\n"
        "  - id: d\n"
        "    exit: done\n"
    )
    path = write(tmp_path, "s.yaml", text)
    errors = errors_in(path)
    assert [e.split(": ")[0] for e in errors] == [f"{path}:8", f"{path}:12", f"{path}:16"]
    assert "does not compile" in errors[0]
    assert "unknown name company_size" in errors[1]
    assert "sandbox" in errors[2]


def test_opened_an_email_that_comes_later(tmp_path: Path) -> None:
    text = SEQUENCE.format(key="s", stage="awareness") + (
        "  - branch:\n"
        "      if: {clicked: later}\n"  # 8
        "      then: later\n"
        "  - id: later\n"
        "    email: {template: demo/ok, subject: Hi}\n"
    )
    path = write(tmp_path, "s.yaml", text)
    assert errors_in(path) == [
        f"{path}:8: clicked: email step 'later' comes after this branch (it is not sent yet)"
    ]


def test_schema_errors_name_the_field(tmp_path: Path) -> None:
    text = SEQUENCE.format(key="s", stage="awarenes") + (
        "  - id: hello\n"
        "    email:\n"  # 8
        "      template: demo/ok\n"
        "  - wiat: 2d\n"  # 10
    )
    path = write(tmp_path, "s.yaml", text)
    errors = errors_in(path)
    assert errors[0].startswith(f"{path}:5: audience.journey_stages[0]: Input should be")
    assert errors[0].endswith("got 'awarenes'")
    assert errors[1] == f"{path}:8: steps[0].email: missing required field 'subject'"
    assert errors[2] == f"{path}:10: steps[1]: unknown field 'wiat' (did you mean 'wait'?)"
    assert "Value error" not in " ".join(errors) and "https://" not in " ".join(errors)


def test_other_kinds_are_skipped_and_locale_warnings(tmp_path: Path) -> None:
    write(tmp_path, "scoring.yaml", "kind: scoring\nrules: []\n")
    text = SEQUENCE.format(key="s", stage="awareness") + (
        "  - email:\n"
        "      template: demo/ok\n"
        "      subject: Hi\n"
        "      locales:\n"
        "        ja: {subject: こんにちは}\n"  # 11
    )
    path = write(tmp_path, "s.yaml", text)
    loaded, problems = load_sequences(tmp_path)
    assert [s.spec.key for s in loaded] == ["s"] and problems == []
    warnings = [str(p) for p in problems_in(path) if p.severity == "warning"]
    assert warnings == [
        f"{path}:11: warning: locale 'ja': no demo/ok.ja.html: the default-locale body will be sent"
    ]


def test_missing_and_empty_paths(tmp_path: Path) -> None:
    assert errors_in(tmp_path / "nope") == [f"{tmp_path / 'nope'}: no such file or directory"]
    assert errors_in(tmp_path) == [f"{tmp_path}: no sequence files (*.yaml, *.yml) here"]


def test_unused_templates_are_warnings_only(tmp_path: Path) -> None:
    report = validate_paths([BROKEN / "overlap"], BROKEN_TEMPLATES, "en")
    unused = ": warning: template not used by any sequence"
    assert [str(p) for p in report.warnings] == [
        f"{BROKEN_TEMPLATES / 'demo' / 'undefined.html'}:1{unused}",
        f"{BROKEN_TEMPLATES / 'demo' / 'undefined.txt'}:1{unused}",
    ]
    assert report.ok is False  # the overlap is an error; the warnings alone would not fail


def test_no_unused_template_warnings_when_a_sequence_file_fails_to_load(tmp_path: Path) -> None:
    shutil.copytree(GOOD, tmp_path / "good")
    folder, templates = tmp_path / "good" / "sequences", tmp_path / "good" / "templates"
    write(templates, "stale.txt", "old copy\n")
    broken = write(folder, "broken.yaml", "key: broken\nname: [unclosed\n")
    report = validate_paths([folder], templates, "en")
    assert [p.file for p in report.errors] == [str(broken)]
    assert report.warnings == []  # which templates broken.yaml uses is unknown
    broken.unlink()
    report = validate_paths([folder], templates, "en")
    assert [str(p) for p in report.warnings] == [
        f"{templates / 'stale.txt'}:1: warning: template not used by any sequence"
    ]


def test_bad_hours_and_bad_time_zone_are_both_reported(tmp_path: Path) -> None:
    text = SEQUENCE.format(key="s", stage="awareness") + (
        "  - exit: x\n"
        "send_window:\n"
        '  hours: "9-5"\n'  # 9
        "  timezone: Mars/Base\n"  # 10
    )
    path = write(tmp_path, "s.yaml", text)
    errors = errors_in(path)
    assert len(errors) == 2, errors
    assert errors[0].startswith(f"{path}:9: send_window.hours: hours must look like")
    assert errors[1].startswith(f"{path}:10: send_window.timezone: unknown time zone 'Mars/Base'")


def test_stored_snapshot_with_unknown_zone_still_reads() -> None:
    # Published before zones were checked on load: running leads must not be stranded.
    document = {
        "key": "s",
        "name": "S",
        "audience": {"personas": ["p"], "journey_stages": ["awareness"]},
        "send_window": {"timezone": "Asia/Seol"},
        "steps": [{"exit": "x"}],
    }
    assert spec_from_document(document).send_window is not None


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("a: 1\nb:\n  - x\n  - {c: 1, c: 2}\n", 4, "duplicate key 'c' (first at line 4)"),
        ("a: [1, 2\n", 2, "YAML syntax error"),
        ("a: 1\n---\nb: 2\n", 2, "expected a single document"),
        ("a: !!python/object:os.system x\n", 1, "bad value"),
    ],
)
def test_yaml_source_errors(text: str, line: int, fragment: str) -> None:
    with pytest.raises(YamlSourceError) as caught:
        parse_yaml(text, "f.yaml")
    problem = caught.value.problems[0]
    assert problem.line == line and fragment in problem.message


def test_line_map_follows_pydantic_locations() -> None:
    _, lines = parse_yaml("steps:\n  - wait: 3d\n  - branch:\n      if:\n        opened: x\n", "f")
    assert lines.line_for(("steps", 1, "branch", "if", "opened")) == 5
    assert lines.line_for(("steps", 1, "branch", "if", "function-after[x]", "all")) == 4
    assert lines.line_for(("steps", 0, "email", "template")) == 2


# -- the command -------------------------------------------------------------------------


def test_cli_good_fixtures_exit_zero() -> None:
    args = ["validate", str(GOOD / "sequences"), "--templates", str(GOOD / "templates")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "2 sequences, 10 templates: no problems"


def test_cli_broken_fixtures_exit_one() -> None:
    args = ["validate", str(BROKEN), "--templates", str(BROKEN_TEMPLATES)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    shown = display_path(BROKEN / "bad_duration.yaml")  # relative to the working directory
    lines = result.output.splitlines()
    assert any(line.startswith(f"{shown}:12: steps[1].wait: bad duration") for line in lines)
    assert "Traceback" not in result.output
    # bad_timezone.yaml does not load (an unknown zone is a schema error): 8 of 9 files.
    assert result.output.strip().splitlines()[-1].startswith("8 sequences, 6 templates: ")


def test_cli_json_is_parseable() -> None:
    args = ["validate", str(BROKEN / "unreachable.yaml"), "--templates", str(BROKEN_TEMPLATES)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["ok"] is False and report["sequences"] == 1
    assert report["errors"] == [
        {
            "file": display_path(BROKEN / "unreachable.yaml"),
            "line": 12,
            "message": "step 'orphan' is unreachable: no path from the first step",
            "severity": "error",
        }
    ]


def test_cli_paths_relative_to_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BROKEN)
    result = runner.invoke(app, ["validate", "unreachable.yaml", "--templates", "templates"])
    assert result.output.startswith("unreachable.yaml:12: step 'orphan'")


def test_cli_defaults_to_configured_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NURTURE_SEQUENCES_DIR", str(GOOD / "sequences"))
    monkeypatch.setenv("NURTURE_TEMPLATES_DIR", str(GOOD / "templates"))
    assert runner.invoke(app, ["validate"]).exit_code == 0
    monkeypatch.delenv("NURTURE_SEQUENCES_DIR")
    result = runner.invoke(app, ["validate"])
    assert result.exit_code == 1
    assert result.output.startswith("sequences: no such file or directory")


def test_cli_warnings_alone_do_not_fail(tmp_path: Path) -> None:
    shutil.copytree(GOOD, tmp_path / "good")
    write(tmp_path / "good" / "templates", "stale.txt", "old copy\n")
    args = ["validate", str(tmp_path / "good" / "sequences")]
    result = runner.invoke(app, [*args, "--templates", str(tmp_path / "good" / "templates")])
    assert result.exit_code == 0, result.output
    assert "stale.txt:1: warning: template not used by any sequence" in result.output
    assert result.output.strip().endswith("2 sequences, 11 templates: 1 warning")


def test_cli_bad_setting_is_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NURTURE_BATCH_SIZE", "many")
    result = runner.invoke(app, ["validate", str(GOOD / "sequences")])
    assert result.exit_code == 2
    assert result.output.startswith("NURTURE_BATCH_SIZE: Input should be a valid integer")
