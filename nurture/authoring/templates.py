"""Email templates: sandboxed Jinja2, strict about undefined names, escaped HTML.

A template name such as ``finance_leader/awareness/welcome`` means two files under the
templates folder, ``welcome.html`` and ``welcome.txt``, with optional locale variants
(``welcome.ko.html``) picked ``ko-KR`` -> ``ko`` -> no suffix. The render context is plain
data (dicts, strings, numbers): never ORM objects, so a template cannot reach the database."""

from __future__ import annotations

import traceback
from collections.abc import (
    Mapping,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import (
    Template,
    TemplateSyntaxError,
    meta,
    nodes,
)
from jinja2.sandbox import ImmutableSandboxedEnvironment

from nurture.authoring.lead_context import locale_chain
from nurture.authoring.problems import Problem
from nurture.authoring.render_limits import RenderLimits
from nurture.authoring.sandbox import FolderLoader, describe, make_environment
from nurture.tracking.links import template_urls

SUBJECT_FILE = "<subject>"
EXPRESSION_FILE = "<expr>"
TEMPLATE_SUFFIXES = ("html", "txt")
# Compiled subject lines kept per renderer; a sequence has a handful, so this is never reached
# in practice and only bounds memory if subjects are generated.
MAX_CACHED_SUBJECTS = 1024


class TemplateProblem(Exception):
    """A template that cannot be rendered, with the file and line to fix."""

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}" if line else f"{file}: {message}")
        self.file = file
        self.line = line
        self.message = message

    def to_problem(self) -> Problem:
        return Problem(self.file, self.line, self.message)


class MissingTemplate(TemplateProblem):
    """No file for a template name (neither the locale variant nor the default)."""


@dataclass(frozen=True)
class RenderedEmail:
    """One email's content, and the template files it came from."""

    subject: str
    html: str
    text: str
    html_file: str
    text_file: str
    # The URLs written literally in the template files (and the layouts, includes and
    # macros they use): the only links click tracking may rewrite.
    template_urls: frozenset[str] = frozenset()


class TemplateRenderer:
    """Renders email steps from a templates folder, with locale fallback."""

    def __init__(self, templates_dir: Path, default_locale: str = "en") -> None:
        self.templates_dir = templates_dir
        self.default_locale = default_locale
        loader = FolderLoader(templates_dir)
        self.html_env = make_environment(loader, html=True)
        self.text_env = make_environment(loader, html=False)
        # Compiling a subject costs ten times rendering it; every lead of a step has the same.
        self._subjects: dict[str, Template] = {}
        # The literal URLs of each template file, computed once per file.
        self._urls: dict[str, frozenset[str]] = {}

    def candidates(self, name: str, locale: str, suffix: str) -> list[str]:
        """Files tried for a template, best first: ``name.ko-KR.html``, ``name.ko.html``,
        ``name.html``."""
        return [f"{name}.{tag}.{suffix}" for tag in locale_chain(locale)] + [f"{name}.{suffix}"]

    def find(self, name: str, locale: str, suffix: str) -> str | None:
        """The template file (relative to the folder) used for ``locale``, or None."""
        if not is_safe_name(name):
            return None
        found = (c for c in self.candidates(name, locale, suffix) if self._exists(c))
        return next(found, None)

    def _exists(self, relative: str) -> bool:
        return (self.templates_dir / relative).is_file()

    def path_of(self, relative: str) -> str:
        return str(self.templates_dir / relative)

    def render_email(
        self, template: str, subject: str, locale: str, context: Mapping[str, Any]
    ) -> RenderedEmail:
        """Subject, HTML and text of one email; raise TemplateProblem naming file:line."""
        html_file = self._require(template, locale, "html")
        text_file = self._require(template, locale, "txt")
        with RenderLimits():  # one budget for the whole email
            return RenderedEmail(
                subject=self.render_subject(subject, context),
                html=self._render(self.html_env, html_file, context),
                text=self._render(self.text_env, text_file, context),
                html_file=self.path_of(html_file),
                text_file=self.path_of(text_file),
                template_urls=self.literal_urls(html_file) | self.literal_urls(text_file),
            )

    def literal_urls(self, name: str) -> frozenset[str]:
        """The URLs written literally in a template file and the templates it extends,
        includes or imports (not those an expression builds); cached per file."""
        urls = self._urls.get(name)
        if urls is None:
            urls = self._urls[name] = frozenset(_literal_urls(self.text_env, name))
        return urls

    def render_subject(self, subject: str, context: Mapping[str, Any]) -> str:
        """The subject line on one line: lead data cannot inject a header with CR/LF."""
        try:
            with RenderLimits():
                rendered = self._subject_template(subject).render(context)
        except Exception as exc:  # every failure becomes a located problem, never a traceback
            raise _located(exc, SUBJECT_FILE, self.templates_dir) from exc
        return " ".join(rendered.split())

    def _subject_template(self, subject: str) -> Template:
        template = self._subjects.get(subject)
        if template is None:
            template = self.text_env.from_string(subject)
            if len(self._subjects) >= MAX_CACHED_SUBJECTS:
                self._subjects.clear()
            self._subjects[subject] = template
        return template

    def _require(self, name: str, locale: str, suffix: str) -> str:
        found = self.find(name, locale, suffix)
        if found is None:
            raise MissingTemplate(
                self.path_of(f"{name}.{suffix}"),
                0,
                f"unknown template '{name}': no {name}.{suffix} in {self.templates_dir}",
            )
        return found

    def _render(
        self, env: ImmutableSandboxedEnvironment, name: str, context: Mapping[str, Any]
    ) -> str:
        try:
            with RenderLimits():
                return env.get_template(name).render(context)
        except Exception as exc:  # every failure becomes a located problem, never a traceback
            raise _located(exc, self.path_of(name), self.templates_dir) from exc


def _literal_urls(env: ImmutableSandboxedEnvironment, name: str) -> set[str]:
    """URLs in the literal text and string constants of ``name`` and of every template it
    names with a constant (a computed name is not followed: its links are not tracked)."""
    urls: set[str] = set()
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            source = env.loader.get_source(env, current)[0] if env.loader else ""
            tree = env.parse(source)
        except Exception:  # rendering reports the problem with its file:line
            continue
        for data in tree.find_all(nodes.TemplateData):
            urls |= template_urls(data.data)
        for const in tree.find_all(nodes.Const):
            if isinstance(const.value, str):
                urls |= template_urls(const.value)
        todo += [n for n in meta.find_referenced_templates(tree) if n is not None]
    return urls


def is_safe_name(name: str) -> bool:
    """A template name stays inside the templates folder (no ``..``, no absolute path)."""
    parts = name.replace("\\", "/").split("/")
    return bool(name) and not name.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def _located(exc: BaseException, file: str, templates_dir: Path) -> TemplateProblem:
    """A TemplateProblem at the template line where ``exc`` happened."""
    if isinstance(exc, TemplateProblem):
        return exc
    if isinstance(exc, TemplateSyntaxError):
        where = exc.filename or file
        return TemplateProblem(_shown(where, file), exc.lineno, f"syntax error: {exc.message}")
    where, line = _template_frame(exc, file, templates_dir)
    return TemplateProblem(where, line, describe(exc))


def _shown(filename: str, fallback: str) -> str:
    return fallback if filename == "<template>" else filename


def _template_frame(exc: BaseException, file: str, templates_dir: Path) -> tuple[str, int]:
    """The innermost traceback frame in a template file (Jinja rewrites frames so that
    they carry the template's file name and line)."""
    root = templates_dir.resolve()
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename == "<template>":
            return file, frame.lineno or 1
        path = Path(frame.filename)
        if path.suffix.lstrip(".") in TEMPLATE_SUFFIXES and path.resolve().is_relative_to(root):
            return frame.filename, frame.lineno or 1
    return file, 1
