"""Templates cannot reach outside their folder, nor exhaust the CPU or memory of the process
that renders them (validate, preview, the scheduler tick)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from nurture.authoring.templates import (
    TemplateProblem,
    TemplateRenderer,
    build_context,
    sample_lead,
)
from nurture.authoring.validate import validate_path

SECRET = "NURTURE_SECRET_KEY=s3cr3t-do-not-mail"
OUTSIDE_URL = "https://evil.example/collect"


def context() -> dict[str, Any]:
    lead = sample_lead("finance_leader", "awareness", "en")
    return build_context(
        lead, "Nurture", "hello@nurture.example", "https://x.example/u/t", "seq", "Seq", "s1"
    )


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the templates folder, holding what a template must never read."""
    folder = tmp_path / "outside"
    write(folder, {"secret.txt": f"{SECRET}\n{OUTSIDE_URL}\n", "macros.html": _MACROS})
    return folder


_MACROS = f"{{% macro leak() %}}{SECRET} {OUTSIDE_URL}{{% endmacro %}}"


@pytest.fixture
def templates(tmp_path: Path, outside: Path) -> Path:
    root = tmp_path / "templates"
    write(root, {"t.txt": "fine\n", "real/partial.html": "<p>partial</p>"})
    (root / "secret.txt").symlink_to(outside / "secret.txt")
    (root / "macros.html").symlink_to(outside / "macros.html")
    (root / "shared").symlink_to(outside, target_is_directory=True)
    (root / "alias.html").symlink_to(root / "real" / "partial.html")  # stays inside
    (root / "inner").symlink_to(root / "real", target_is_directory=True)  # stays inside
    return root


def refused(root: Path, html: str, name: str = "t") -> TemplateProblem:
    write(root, {f"{name}.html": html})
    with pytest.raises(TemplateProblem) as caught:
        TemplateRenderer(root).render_email(name, "Hi", "en", context())
    assert SECRET not in str(caught.value)
    return caught.value


@pytest.mark.parametrize(
    ("html", "target"),
    [
        ('<p>a</p>\n{% include "secret.txt" %}\n', "secret.txt"),
        ('<p>a</p>\n{% include "shared/secret.txt" %}\n', "shared/secret.txt"),
        ('<p>a</p>\n{% import "macros.html" as m %}{{ m.leak() }}\n', "macros.html"),
        ('<p>a</p>\n{% from "macros.html" import leak %}{{ leak() }}\n', "macros.html"),
        ('<p>a</p>\n{% include ["missing.html", "secret.txt"] %}\n', "secret.txt"),
        ('<p>a</p>\n{% include "../outside/secret.txt" %}\n', "../outside/secret.txt"),
    ],
)
def test_a_template_outside_the_folder_is_refused_at_its_line(
    templates: Path, html: str, target: str
) -> None:
    problem = refused(templates, html)
    assert (problem.file, problem.line) == (str(templates / "t.html"), 2)
    assert target in problem.message


def test_extends_outside_the_folder_is_refused(templates: Path) -> None:
    problem = refused(templates, '{% extends "shared/macros.html" %}')
    assert (problem.file, problem.line) == (str(templates / "t.html"), 1)
    assert "shared/macros.html" in problem.message and "outside" in problem.message


def test_a_template_that_is_itself_a_link_outside_is_refused(
    templates: Path, outside: Path
) -> None:
    (templates / "leak.html").symlink_to(outside / "secret.txt")
    (templates / "leak.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(TemplateProblem) as caught:
        TemplateRenderer(templates).render_email("leak", "Hi", "en", context())
    assert caught.value.file == str(templates / "leak.html")
    assert "outside the templates folder" in caught.value.message
    assert SECRET not in str(caught.value)


def test_a_subject_cannot_include_a_file_outside(templates: Path) -> None:
    write(templates, {"t.html": "<p>fine</p>"})
    renderer = TemplateRenderer(templates)
    with pytest.raises(TemplateProblem) as caught:
        renderer.render_email("t", 'Hi {% include "secret.txt" %}', "en", context())
    assert caught.value.file == "<subject>" and "secret.txt" in caught.value.message


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_a_link_to_the_process_environment_is_refused(
    templates: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NURTURE_SECRET_KEY", "s3cr3t-do-not-mail")
    (templates / "environ.txt").symlink_to("/proc/self/environ")
    problem = refused(templates, '<p>a</p>\n{% include "environ.txt" %}\n')
    assert problem.line == 2 and "environ.txt" in problem.message
    assert "s3cr3t" not in str(problem)


def test_links_that_stay_inside_keep_working(templates: Path) -> None:
    write(
        templates,
        {"t.html": '{% include "alias.html" %}|{% include "inner/partial.html" %}'},
    )
    email = TemplateRenderer(templates).render_email("t", "Hi", "en", context())
    assert email.html == "<p>partial</p>|<p>partial</p>"


def test_the_templates_folder_may_itself_be_a_link(tmp_path: Path, templates: Path) -> None:
    link = tmp_path / "linked-templates"
    link.symlink_to(templates, target_is_directory=True)
    write(templates, {"t.html": '{% include "alias.html" %}'})
    assert TemplateRenderer(link).render_email("t", "Hi", "en", context()).html == (
        "<p>partial</p>"
    )
    with pytest.raises(TemplateProblem, match="outside the templates folder"):
        TemplateRenderer(link).render_email("t", 'Hi {% include "secret.txt" %}', "en", context())


def test_link_scanner_does_not_read_files_outside(templates: Path) -> None:
    write(
        templates,
        {"t.html": '{% include "secret.txt" ignore missing %}{% include "shared/secret.txt" %}'},
    )
    urls = TemplateRenderer(templates).literal_urls("t.html")
    assert OUTSIDE_URL not in urls


def test_validate_reports_the_link_at_file_and_line(tmp_path: Path, templates: Path) -> None:
    write(templates, {"mail.html": '<p>a</p>\n{% include "secret.txt" %}\n', "mail.txt": "x\n"})
    sequences = tmp_path / "sequences"
    write(
        sequences,
        {
            "s.yaml": "key: s\nname: S\naudience:\n  personas: [finance_leader]\n"
            "  journey_stages: [awareness]\nsteps:\n"
            "  - id: hello\n    email:\n      template: mail\n      subject: Hi\n"
        },
    )
    problems = [p for p in validate_path(sequences, templates, "en") if p.is_error]
    assert [(p.file, p.line) for p in problems] == [(str(templates / "mail.html"), 2)]
    assert "secret.txt" in problems[0].message and "outside" in problems[0].message
    assert SECRET not in problems[0].message


def test_outside_check_uses_the_real_path(templates: Path) -> None:
    # A sanity check of the fixture itself: the links really point outside.
    assert not os.path.realpath(templates / "secret.txt").startswith(str(templates))
    assert os.path.realpath(templates / "alias.html").startswith(os.path.realpath(templates))
