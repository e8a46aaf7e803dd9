"""Templates cannot reach outside their folder, nor exhaust the CPU or memory of the process
that renders them (validate, preview, the scheduler tick)."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.engine import MONDAY, TEMPLATES, add_lead, enrollment, make_runtime, messages, tick_at

from nurture.authoring.expressions import ConditionError, compile_condition
from nurture.authoring.lead_context import build_context, sample_lead
from nurture.authoring.templates import TemplateProblem, TemplateRenderer
from nurture.delivery.transports import MemoryTransport
from nurture.program.validate import validate_path

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


# -- limits on time and memory ------------------------------------------------------------

NESTED_LOOPS = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
BIG = "{% set big = 'x' * 100000 %}"  # 100,000 characters: allowed, and a building block
DOUBLING = "{% set ns = namespace(s='x' * 100000) %}{% for i in range(30) %}"

# (what runs on line 2 of a template, what the problem says); each would otherwise hang, or
# build a string of a gigabyte or more.
HOSTILE = {
    "nested ranges": (NESTED_LOOPS, "render took longer than"),
    "range too big": ("{% for i in range(100000) %}{% endfor %}", "range() of 100,000 items"),
    "huge range": ("{{ range(10 ** 20)|length }}", "range()"),
    "chained power": ("{{ ((2 ** 100) ** 100) ** 100 }}", "bits"),
    "big exponent": ("{{ 2 ** (100 ** 100) }}", "exponent"),
    "squaring in a loop": (
        "{% set ns = namespace(x=3) %}{% for i in range(40) %}"
        "{% set ns.x = ns.x * ns.x %}{% endfor %}",
        "bits",
    ),
    "center method": ("{{ 'x'.center(10 ** 9) }}", "center()"),
    "ljust method": ("{{ 'x'.ljust(10 ** 9) }}", "ljust()"),
    "rjust method": ("{{ 'x'.rjust(10 ** 9) }}", "rjust()"),
    "zfill method": ("{{ '1'.zfill(10 ** 9) }}", "zfill()"),
    "expandtabs": ("{{ '\\t\\t'.expandtabs(10 ** 9) }}", "expandtabs()"),
    "replace method": (BIG + "{{ big.replace('', 'yyyyyyyyyy') }}", "replace()"),
    "join method": (BIG + "{{ ','.join([big] * 100000) }}", "join()"),
    "to_bytes": ("{{ (1).to_bytes(10 ** 9, 'little') }}", "to_bytes()"),
    "percent width": ("{{ '%900000000s' % 'x' }}", "'%'"),
    "percent precision": ("{{ '%.900000000f' % 1.5 }}", "'%'"),
    "percent star": ("{{ '%*s' % (900000000, 'x') }}", "'*' width"),
    "percent fan-out": (BIG + "{{ '%s' * 11 % ((big,) * 11) }}", "'%'"),
    "format method width": ("{{ '{:900000000}'.format('x') }}", "format()"),
    "format nested width": ("{{ '{:{w}}'.format('x', w=900000000) }}", "computed width"),
    "format fan-out": (BIG + "{{ '{0}' * 11 }}{{ ('{0}' * 11).format(big) }}", "format()"),
    "format_map": ("{{ '{a:900000000}'.format_map({'a': 'x'}) }}", "format()"),
    "format filter": ("{{ '%900000000s'|format('x') }}", "|format"),
    "center filter": ("{{ 'x'|center(1000000000) }}", "|center"),
    "indent filter": ("{{ ('a\\n' * 50000)|indent(100) }}", "|indent"),
    "indent string": (BIG + "{{ ('a\\n' * 50000)|indent(big) }}", "|indent"),
    "wordwrap filter": ("{{ ('a ' * 50000)|wordwrap(1, wrapstring='x' * 1000) }}", "|wordwrap"),
    "join filter": (BIG + "{{ ([big] * 100000)|join }}", "|join"),
    "join of a map": (BIG + "{{ ([big] * 100000)|map('upper')|join(',') }}", "|map"),
    "replace filter": (BIG + "{{ big|replace('', 'yyyyyyyyyy') }}", "|replace"),
    "urlize target": ("{{ ('http://a.example ' * 5000)|urlize(target='x' * 1000) }}", "|urlize"),
    "tojson indent": ("{{ [[[1]]]|tojson(indent=1000000000) }}", "indent"),
    "slice count": ("{{ range(10)|slice(1000000000)|list }}", "|slice"),
    "batch fill": ("{{ [1]|batch(1000000000, 0)|list }}", "|batch"),
    "sum of lists": ("{{ ([[1] * 100000] * 100000)|sum(start=[]) }}", "'+'"),
    "lipsum": ("{{ lipsum(100000) }}", "lipsum()"),
    "tilde doubling": (DOUBLING + "{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "'~'"),
    "plus doubling": (DOUBLING + "{% set ns.s = ns.s + ns.s %}{% endfor %}", "'+'"),
    "list doubling": (
        "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}"
        "{% set ns.l = ns.l + ns.l %}{% endfor %}",
        "'+'",
    ),
    "tilde fan-out": (
        BIG + "{% set b = big ~ big ~ big ~ big ~ big ~ big ~ big ~ big ~ big ~ big ~ big %}",
        "'~'",
    ),
    "printing a list": (BIG + "{{ [big] * 100000 }}", "the value written"),
    "list in a tilde": (BIG + "{{ ([big] * 100000) ~ '' }}", "'~'"),
    "list as string": (BIG + "{{ ([big] * 100000)|string }}", "|string"),
    "list as json": (BIG + "{{ ([big] * 100000)|tojson }}", "|tojson"),
    "printing dict items": (BIG + "{{ {}.fromkeys(range(10000), big).items() }}", "written"),
    "many medium strings": ("{{ range(10000)|map('center', 100000)|list|length }}", "in all"),
    "a map of lists": ("{{ ([[1] * 100000] * 100000)|map('list')|list|length }}", "|map"),
    "output": ("{% for i in range(10000) %}{{ 'x' * 1000 }}{% endfor %}", "output longer"),
    "macro buffer": (
        "{% macro m(a) %}{% for i in range(10000) %}{{ a }}{% endfor %}{% endmacro %}"
        "{% set x = m('x' * 1000) %}",
        "output longer",
    ),
    "set block": (
        "{% set x %}{% for i in range(10000) %}{{ 'x' * 1000 }}{% endfor %}{% endset %}",
        "output longer",
    ),
}


FAST_LIMIT = 0.5


@pytest.fixture
def fast_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # The same check as the 2 s default, without waiting 2 s a case.
    monkeypatch.setattr("nurture.authoring.render_limits.MAX_RENDER_SECONDS", FAST_LIMIT)


@pytest.fixture
def limit_for(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """The fast time limit for the cases about time; the others keep the default, which a
    busy machine's garbage collection cannot reach before their size limit."""

    def apply(says: str) -> None:
        if "took longer" in says:
            monkeypatch.setattr("nurture.authoring.render_limits.MAX_RENDER_SECONDS", FAST_LIMIT)

    return apply


def limited(root: Path, statement: str) -> TemplateProblem:
    write(root, {"t.html": f"<p>fine</p>\n{statement}\n", "t.txt": "fine\n"})
    started = time.monotonic()
    with pytest.raises(TemplateProblem) as caught:
        TemplateRenderer(root).render_email("t", "Hi", "en", context())
    assert time.monotonic() - started < 10
    return caught.value


@pytest.mark.parametrize(("statement", "says"), HOSTILE.values(), ids=HOSTILE.keys())
def test_a_runaway_template_is_a_problem_at_its_line(
    tmp_path: Path, limit_for: Callable[[str], None], statement: str, says: str
) -> None:
    limit_for(says)
    problem = limited(tmp_path, statement)
    assert (problem.file, problem.line) == (str(tmp_path / "t.html"), 2), problem
    assert says in problem.message, problem


@pytest.mark.parametrize(("statement", "says"), HOSTILE.values(), ids=HOSTILE.keys())
def test_a_runaway_subject_is_a_problem_too(
    tmp_path: Path, limit_for: Callable[[str], None], statement: str, says: str
) -> None:
    limit_for(says)
    write(tmp_path, {"t.html": "<p>fine</p>", "t.txt": "fine\n"})
    with pytest.raises(TemplateProblem) as caught:
        TemplateRenderer(tmp_path).render_email("t", statement, "en", context())
    assert caught.value.file == "<subject>" and says in caught.value.message


def test_the_default_time_limit_is_two_seconds(tmp_path: Path) -> None:
    started = time.monotonic()
    problem = limited(tmp_path, NESTED_LOOPS)
    assert problem.message == "render took longer than 2 s"
    assert 2 <= time.monotonic() - started < 4


def test_the_time_limit_is_for_the_whole_email(tmp_path: Path, fast_limit: None) -> None:
    # Three parts that each take most of the limit are one email over it.
    slow = "{% for i in range(10000) %}{% for j in range(300) %}{% endfor %}{% endfor %}"
    write(tmp_path, {"t.html": slow, "t.txt": slow})
    with pytest.raises(TemplateProblem, match="render took longer"):
        TemplateRenderer(tmp_path).render_email("t", slow, "en", context())


def test_a_template_that_recurses_forever_is_a_problem(tmp_path: Path) -> None:
    problem = limited(tmp_path, "{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}{{ r(0) }}")
    assert problem.file == str(tmp_path / "t.html") and "recursion" in problem.message


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        ("(range(10000)|map('center', 100000)|list|length) > 0", "in all"),
        ("lead.company.center(10 ** 9) == ''", "center()"),
        ("('%900000000s' % lead.company)|length > 0", "'%'"),
        ("((2 ** 100) ** 100) ** 100 > 0", "bits"),
        ("range(100000)|length > 0", "range()"),
        ("(lead.company ~ lead.company).ljust(10 ** 9) == ''", "ljust()"),
    ],
)
def test_a_runaway_condition_is_a_condition_error(expr: str, says: str) -> None:
    test = compile_condition(expr)
    with pytest.raises(ConditionError, match=re.escape(says)):
        test(sample_lead("finance_leader", "awareness", "en"))


def test_a_slow_condition_stops_at_the_time_limit(fast_limit: None) -> None:
    slow = "range(10000)|map('string')|map('center', 10)|map('upper')|list|length > 0"
    test = compile_condition(" and ".join([f"({slow})"] * 40))  # about 3 s without a limit
    with pytest.raises(ConditionError, match="render took longer"):
        test(sample_lead("finance_leader", "awareness", "en"))


def test_ordinary_templates_are_well_within_the_limits(tmp_path: Path) -> None:
    html = (
        "{% set ns = namespace(total=0) %}"
        "{% for i in range(1, 101) %}{% set ns.total = ns.total + i %}{% endfor %}"
        "<p>{{ lead.first_name|title }} {{ '%05.1f'|format(3.14159) }} {{ ns.total }}</p>"
        "<p>{{ '{:>8}|{:<8}'.format(lead.company[:8], 'x') }} {{ 'a' ~ 1 ~ lead.last_name }}</p>"
        "<p>{{ ('word ' * 30)|wordwrap(20)|indent(2) }} {{ [1, 2, 3]|join(', ') }}</p>"
        "<p>{{ [1, 2]|sum }} {{ lead|tojson|length > 10 }} {{ (2 ** 64) * 3 }}</p>"
        "{% for row in range(12)|batch(5, '-') %}{{ row|join }}{% endfor %}"
    )
    write(tmp_path, {"t.html": html, "t.txt": "x\n"})
    email = TemplateRenderer(tmp_path).render_email(
        "t", "{{ lead.first_name }}, 5 signs", "en", context()
    )
    assert "5050" in email.html and "003.1" in email.html and email.subject == "Alex, 5 signs"
    assert "55340232221128654848" in email.html and "01234" in email.html


@pytest.mark.parametrize(
    "expression",
    [
        "''.__class__.__mro__[1].__subclasses__()",
        "lead.__class__.__base__",
        "cycler.__init__.__globals__.os",
        "joiner.__init__.__globals__",
        "namespace.__init__.__globals__",
        "lipsum.__globals__",
        "range.__globals__",
        "self.__init__.__globals__",
        "self._TemplateReference__context",
        "'{0.__class__.__mro__}'.format(lead)",
        "'{a.__class__}'.format_map({'a': lead})",
        "(lead|attr('__class__')).__mro__",
        "lead.attributes.update({'admin': true})",
        "[].__class__.__base__.__subclasses__()",
    ],
)
def test_sandbox_escapes_are_still_refused(tmp_path: Path, expression: str) -> None:
    problem = limited(tmp_path, "{{ " + expression + " }}")
    assert problem.line == 2
    assert "sandbox" in problem.message or "unsafe" in problem.message, problem


# -- a runaway template in the engine -----------------------------------------------------


@pytest.fixture
def runaway_templates(tmp_path: Path) -> Path:
    """The engine fixtures' templates, with drip's English welcome email never ending."""
    folder = tmp_path / "engine-templates"
    shutil.copytree(TEMPLATES, folder)
    write(
        folder,
        {
            "drip/welcome.html": '{% extends "_layouts/base.html" %}{% block body %}\n'
            f"<p>Hi {{{{ lead.first_name }}}}</p>\n{NESTED_LOOPS}\n{{% endblock %}}\n"
        },
    )
    return folder


def test_a_runaway_template_fails_its_message_and_frees_the_enrollment(
    db_url: str, runaway_templates: Path, fast_limit: None
) -> None:
    transport = MemoryTransport()
    rt = make_runtime(db_url, transport, templates_dir=runaway_templates)
    try:
        runaway = add_lead(rt, "runaway@acme.example")
        fine = add_lead(rt, "fine@acme.example", locale="ko")  # welcome.ko.html is fine
        started = time.monotonic()
        report = tick_at(rt, MONDAY)
        assert time.monotonic() - started < 10
        assert report.total_sent == 1 and report.problems["failed"] == 1
        [failed] = messages(rt, lead_id=runaway)
        assert failed.status == "failed"
        html = runaway_templates / "drip" / "welcome.html"
        assert failed.error == f"template: {html}:3: render took longer than {FAST_LIMIT} s"
        assert [m.status for m in messages(rt, lead_id=fine)] == ["sent"]
        assert [m.to for m in transport.sent] == ["fine@acme.example"]
        assert messages(rt, status="sending") == []
        stuck = enrollment(rt, runaway)
        assert (stuck.claim_token, stuck.claimed_until) == (None, None)
        assert stuck.status == "exited" and "render took longer" in (stuck.exit_reason or "")
    finally:
        rt.close()
