"""Templates: sandboxed, strict, escaped HTML, locale fallback, one-line subjects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nurture.authoring.expressions import ConditionError, compile_condition
from nurture.authoring.lead_context import build_context, lead_fields, sample_lead
from nurture.authoring.templates import MissingTemplate, TemplateProblem, TemplateRenderer
from nurture.db.models import Lead

LAYOUT_HTML = """\
<html><body>
{% block body %}{% endblock %}
<a href="{{ unsubscribe_url }}">unsubscribe</a>
</body></html>
"""


def make_templates(root: Path, files: dict[str, str]) -> TemplateRenderer:
    for name, text in {"_layouts/base.html": LAYOUT_HTML, **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return TemplateRenderer(root, "en")


def context(**lead: Any) -> dict[str, Any]:
    fields = {**sample_lead("finance_leader", "awareness", "en"), **lead}
    return build_context(
        fields, "Nurture", "hello@nurture.example", "https://x.example/u/t", "seq", "Seq", "s1"
    )


def problem(renderer: TemplateRenderer, name: str, subject: str = "Hi") -> TemplateProblem:
    with pytest.raises(TemplateProblem) as caught:
        renderer.render_email(name, subject, "en", context())
    return caught.value


@pytest.mark.parametrize(
    "expression",
    [
        "lead.__class__",
        "''.__class__.__mro__",
        "cycler.__init__.__globals__",
        "lead.attributes.update({'admin': true})",
        "'x' * 1000000",
    ],
)
def test_sandbox_refuses_unsafe_access(tmp_path: Path, expression: str) -> None:
    renderer = make_templates(
        tmp_path,
        {"t.html": "<p>fine</p>\n<p>{{ " + expression + " }}</p>\n", "t.txt": "fine\n"},
    )
    refused = problem(renderer, "t")
    assert (refused.file, refused.line) == (str(tmp_path / "t.html"), 2)
    assert refused.message.startswith("refused by the sandbox")
    # The same expression in a subject is refused too.
    assert "sandbox" in problem(renderer, "t", "{{ " + expression + " }}").message


def test_lead_html_is_escaped_in_html_but_not_in_text(tmp_path: Path) -> None:
    renderer = make_templates(
        tmp_path,
        {
            "t.html": '{% extends "_layouts/base.html" %}'
            "{% block body %}<p>Hi {{ lead.first_name }}</p>{% endblock %}",
            "t.txt": "Hi {{ lead.first_name }}\n",
        },
    )
    email = renderer.render_email(
        "t", "About {{ lead.first_name }}", "en", context(first_name="<script>x()</script>")
    )
    assert "<p>Hi &lt;script&gt;x()&lt;/script&gt;</p>" in email.html
    assert "https://x.example/u/t" in email.html
    assert email.text == "Hi <script>x()</script>\n"
    assert email.subject == "About <script>x()</script>"


def test_locale_fallback(tmp_path: Path) -> None:
    renderer = make_templates(
        tmp_path,
        {
            "w.html": "<p>en</p>",
            "w.txt": "en",
            "w.ko.html": "<p>ko</p>",
            "w.ko.txt": "ko",
            "w.pt-BR.txt": "pt-BR",
        },
    )
    assert renderer.render_email("w", "s", "ko-KR", context()).text == "ko"
    assert renderer.render_email("w", "s", "ko_KR", context()).text == "ko"
    assert renderer.render_email("w", "s", "ko", context()).html == "<p>ko</p>"
    assert renderer.render_email("w", "s", "ja", context()).text == "en"
    assert renderer.render_email("w", "s", "", context()).text == "en"
    mixed = renderer.render_email("w", "s", "pt-BR", context())
    assert (mixed.text, mixed.html) == ("pt-BR", "<p>en</p>")
    assert mixed.text_file == str(tmp_path / "w.pt-BR.txt")
    assert mixed.html_file == str(tmp_path / "w.html")


def test_subject_stays_on_one_line(tmp_path: Path) -> None:
    renderer = make_templates(tmp_path, {"t.html": "x", "t.txt": "x"})
    lead = context(first_name="Eve\r\nBcc: victim@example.com\n")
    email = renderer.render_email("t", "Hello {{ lead.first_name }},\n  welcome", "en", lead)
    assert email.subject == "Hello Eve Bcc: victim@example.com , welcome"
    assert "\n" not in email.subject and "\r" not in email.subject


def test_a_subject_compiled_once_renders_for_every_lead(tmp_path: Path) -> None:
    # Subjects are compiled once per renderer: the cache must not carry one lead's
    # rendering, or an error, over to the next.
    renderer = make_templates(tmp_path, {"t.html": "x", "t.txt": "x"})
    subject = "{{ lead.first_name }}, 5 signs"
    first = renderer.render_email("t", subject, "en", context(first_name="Ann"))
    second = renderer.render_email("t", subject, "en", context(first_name="Bo"))
    assert (first.subject, second.subject) == ("Ann, 5 signs", "Bo, 5 signs")
    strict = "{{ lead.nickname }}"
    for _ in range(2):
        failed = problem(renderer, "t", strict)
        assert failed.file == "<subject>" and "nickname" in failed.message
    for _ in range(2):
        assert "syntax error" in problem(renderer, "t", "{{ lead.first_name").message


def test_errors_name_template_file_and_line(tmp_path: Path) -> None:
    renderer = make_templates(
        tmp_path,
        {
            "syntax.html": "<p>a</p>\n<p>b</p>\n{% if lead.first_name %}\n",
            "syntax.txt": "x",
            "child.html": '{% extends "_layouts/broken.html" %}{% block body %}{% endblock %}',
            "child.txt": "x",
            "_layouts/broken.html": "<p>\n{{ lead.nickname }}\n</p>{% block body %}{% endblock %}",
            "gone.html": '{% extends "_layouts/missing.html" %}',
            "gone.txt": "x",
            "badlayout.html": '{% extends "_layouts/bad.html" %}',
            "badlayout.txt": "x",
            "_layouts/bad.html": "line 1\n{% endif %}\n",
        },
    )
    syntax = problem(renderer, "syntax")
    assert (syntax.file, syntax.line) == (str(tmp_path / "syntax.html"), 3)
    assert syntax.message.startswith("syntax error")
    undefined = problem(renderer, "child")
    assert (undefined.file, undefined.line) == (str(tmp_path / "_layouts/broken.html"), 2)
    assert "nickname" in undefined.message
    gone = problem(renderer, "gone")
    assert (gone.file, gone.line) == (str(tmp_path / "gone.html"), 1)
    assert gone.message == "template '_layouts/missing.html' not found"
    bad = problem(renderer, "badlayout")
    assert (bad.file, bad.line) == (str(tmp_path / "_layouts/bad.html"), 2)
    subject = problem(renderer, "child", "{{ lead.first_name")
    assert subject.file == "<subject>" and "syntax error" in subject.message


def test_missing_template_and_unsafe_names(tmp_path: Path) -> None:
    renderer = make_templates(tmp_path, {"only_html.html": "x"})
    with pytest.raises(MissingTemplate, match=r"no only_html\.txt"):
        renderer.render_email("only_html", "s", "en", context())
    assert renderer.find("../etc/passwd", "en", "txt") is None
    assert renderer.find("/etc/passwd", "en", "txt") is None


def test_context_is_plain_data() -> None:
    lead = Lead(
        email="mina@acme.example",
        first_name="Mina",
        last_name="Park",
        company="Acme",
        title="CFO",
        industry="Retail",
        company_size=120,
        country="KR",
        timezone="Asia/Seoul",
        locale="ko",
        persona="finance_leader",
        journey_stage="awareness",
        lifecycle_stage="lead",
        attributes={"source": "webinar", "tags": ("a", "b")},
    )
    fields = lead_fields(lead)
    assert fields["first_name"] == "Mina" and fields["company_size"] == 120
    assert fields["attributes"] == {"source": "webinar", "tags": ["a", "b"]}
    fields["attributes"]["source"] = "changed"
    assert lead.attributes["source"] == "webinar"  # a copy, not the ORM's dict
    ctx = build_context(fields, "N", "n@x.example", "https://u", "k", "Key", "step-1")
    assert set(ctx) == {"lead", "sender", "unsubscribe_url", "sequence", "step"}
    assert _only_plain(ctx)


def _only_plain(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _only_plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_only_plain(v) for v in value)
    return value is None or isinstance(value, str | int | float | bool)


def test_sample_lead_follows_locale() -> None:
    korean = sample_lead("it_director", "decision", "ko-KR")
    assert korean["country"] == "KR" and korean["locale"] == "ko-KR"
    assert korean["persona"] == "it_director" and korean["journey_stage"] == "decision"
    assert sample_lead("it_director", "decision", "en")["country"] == "US"


def test_expression_conditions() -> None:
    big = compile_condition("lead.company_size >= 100 and lead.persona == 'finance_leader'")
    assert big(sample_lead("finance_leader", "awareness", "en")) is True
    assert big({**sample_lead("finance_leader", "awareness", "en"), "company_size": 20}) is False
    with pytest.raises(ConditionError, match="does not compile"):
        compile_condition("lead.company_size >=")
    with pytest.raises(ConditionError, match="undefined"):
        compile_condition("lead.budget > 10")(sample_lead("finance_leader", "awareness", "en"))
    with pytest.raises(ConditionError, match="sandbox"):
        compile_condition("lead.__class__")(sample_lead("finance_leader", "awareness", "en"))
