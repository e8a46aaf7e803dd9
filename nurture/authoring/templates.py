"""Email templates: sandboxed Jinja2, strict about undefined names, escaped HTML.

A template name such as ``finance_leader/awareness/welcome`` means two files under the
templates folder, ``welcome.html`` and ``welcome.txt``, with optional locale variants
(``welcome.ko.html``) picked ``ko-KR`` -> ``ko`` -> no suffix. The render context is plain
data (dicts, strings, numbers): never ORM objects, so a template cannot reach the database."""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from jinja2 import (
    BaseLoader,
    Environment,
    StrictUndefined,
    Template,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    meta,
    nodes,
)
from jinja2.loaders import split_template_path
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from nurture.authoring.problems import Problem
from nurture.tracking.links import template_urls

if TYPE_CHECKING:
    from nurture.db.models import Lead

SUBJECT_FILE = "<subject>"
EXPRESSION_FILE = "<expr>"
TEMPLATE_SUFFIXES = ("html", "txt")
LEAD_FIELDS = (
    "first_name",
    "last_name",
    "email",
    "company",
    "title",
    "industry",
    "company_size",
    "country",
    "timezone",
    "locale",
    "persona",
    "journey_stage",
    "lifecycle_stage",
    "attributes",
)
# Largest string or list a template may build with '*' (a sandbox must not eat the memory).
MAX_REPEAT = 100_000
MAX_POWER = 100
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


class TemplateOutsideFolder(Exception):
    """A template name whose file resolves (through a symlink) outside the templates folder."""

    def __init__(self, name: str, real_path: str) -> None:
        super().__init__(
            f"template '{name}' is a link to {real_path}, outside the templates folder: refused"
        )


class LeadData(Protocol):
    """A lead's fields without the ORM object: a row of ``Lead``'s columns (id, email and
    LEAD_FIELDS), read by attribute."""

    id: int
    email: str


class ConditionError(ValueError):
    """An ``expr:`` condition that does not compile or cannot be evaluated for a lead."""


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


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, plus limits on ``*`` and ``**`` so a template cannot exhaust memory."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_POWER:
            raise SecurityError(f"exponent {right} is too large")
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(count, int)
                if sized and len(seq) * count > MAX_REPEAT:
                    raise SecurityError("repeating a string or list this many times")
        return super().call_binop(context, operator, left, right)


class FolderLoader(BaseLoader):
    """Template files of one folder, read only if their real path (every symlink resolved)
    lies inside it: a link to /proc/self/environ once mailed the secret key to a lead.

    Checked before the file is opened (a link to /dev/zero or a FIFO is never read), for
    every way a template is loaded: get_template, include, import, extends, and the
    literal-URL scanner, which all go through ``get_source``."""

    def __init__(self, folder: Path, encoding: str = "utf-8") -> None:
        self.folder = str(folder)
        self.encoding = encoding

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        filename = os.path.join(self.folder, *split_template_path(template))
        real = os.path.realpath(filename)
        if not os.path.isfile(real):
            raise TemplateNotFound(template)
        root = os.path.realpath(self.folder)
        if os.path.commonpath([root, real]) != root:
            raise TemplateOutsideFolder(template, real)
        with open(real, encoding=self.encoding) as file:
            contents = file.read()
        mtime = os.path.getmtime(real)

        def uptodate() -> bool:
            try:
                return os.path.getmtime(real) == mtime
            except OSError:
                return False

        return contents, os.path.normpath(filename), uptodate


def make_environment(loader: BaseLoader | None, *, html: bool) -> ImmutableSandboxedEnvironment:
    """The sandboxed environment: strict undefined, autoescape for HTML only."""
    return _Sandbox(
        loader=loader,
        undefined=StrictUndefined,
        autoescape=html,
        trim_blocks=not html,
        lstrip_blocks=not html,
        keep_trailing_newline=True,
    )


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


def locale_chain(locale: str) -> list[str]:
    """Locale tags to try before the default: ``ko-KR`` -> ``['ko-KR', 'ko']``."""
    tag = locale.strip().replace("_", "-")
    chain = [tag] if tag else []
    language = tag.split("-")[0]
    if language and language not in chain:
        chain.append(language)
    return chain


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
    return TemplateProblem(where, line, _describe(exc))


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


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TemplateOutsideFolder):
        return str(exc)
    if isinstance(exc, SecurityError):
        return f"refused by the sandbox: {exc}"
    if isinstance(exc, UndefinedError):
        return f"undefined variable: {exc.message}"
    if isinstance(exc, TemplateNotFound):
        return f"template '{exc.name}' not found"
    return f"{type(exc).__name__}: {exc}"


def plain(value: Any) -> Any:
    """Plain data only (dicts, lists, str, numbers, bool, None): anything else becomes text."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def build_context(
    lead: Mapping[str, Any],
    sender_name: str,
    sender_email: str,
    unsubscribe_url: str,
    sequence_key: str,
    sequence_name: str,
    step_id: str,
) -> dict[str, Any]:
    """What a template sees: ``lead``, ``sender``, ``unsubscribe_url``, ``sequence``,
    ``step``, all plain data."""
    return {
        "lead": plain(lead),
        "sender": {"name": sender_name, "email": sender_email},
        "unsubscribe_url": unsubscribe_url,
        "sequence": {"key": sequence_key, "name": sequence_name},
        "step": {"id": step_id},
    }


def lead_fields(lead: Lead | LeadData) -> dict[str, Any]:
    """The ``lead`` a template sees, copied out of the ORM object (or a row of its columns)."""
    return {name: plain(getattr(lead, name)) for name in LEAD_FIELDS}


_SAMPLE_PEOPLE = {
    "ko": ("민준", "김", "한빛테크", "KR", "Asia/Seoul"),
    "ja": ("陽翔", "佐藤", "さくらシステムズ", "JP", "Asia/Tokyo"),
}
_DEFAULT_PERSON = ("Alex", "Morgan", "Northwind Analytics", "US", "America/New_York")
_SAMPLE_TITLES = {
    "finance_leader": "Chief Financial Officer",
    "it_director": "Director of IT",
    "procurement_manager": "Procurement Manager",
}


def sample_lead(persona: str, journey_stage: str, locale: str) -> dict[str, Any]:
    """A plausible lead of one persona, stage and locale (for validation and previews)."""
    language = locale_chain(locale)[-1] if locale_chain(locale) else ""
    first, last, company, country, zone = _SAMPLE_PEOPLE.get(language, _DEFAULT_PERSON)
    return {
        "first_name": first,
        "last_name": last,
        "email": "alex.morgan@northwind.example",
        "company": company,
        "title": _SAMPLE_TITLES.get(persona, persona.replace("_", " ").title()),
        "industry": "Manufacturing",
        "company_size": 250,
        "country": country,
        "timezone": zone,
        "locale": locale,
        "persona": persona,
        "journey_stage": journey_stage,
        "lifecycle_stage": "lead",
        "attributes": {},
    }


@lru_cache(maxsize=1)
def _expression_env() -> ImmutableSandboxedEnvironment:
    return make_environment(None, html=False)


def compile_condition(expr: str) -> Callable[[Mapping[str, Any]], bool]:
    """An ``expr:`` condition (``lead.company_size >= 100``) as a test of a plain lead dict;
    raise ConditionError when it does not compile (and, from the test, when it fails)."""
    try:
        compiled = _expression_env().compile_expression(expr, undefined_to_none=False)
    except TemplateSyntaxError as exc:
        raise ConditionError(f"expression {expr!r} does not compile: {exc.message}") from exc

    def holds(lead: Mapping[str, Any]) -> bool:
        try:
            return bool(compiled(lead=plain(lead)))
        except Exception as exc:  # the caller gets one error type, with the reason
            raise ConditionError(f"expression {expr!r}: {_describe(exc)}") from exc

    return holds


def expression_names(expr: str) -> set[str]:
    """Top-level names an expression reads (only ``lead`` and Jinja's globals exist)."""
    try:
        tree = Parser(_expression_env(), expr, state="variable").parse_expression()
    except TemplateSyntaxError:
        return set()
    return {n.name for n in tree.find_all(nodes.Name) if n.ctx == "load"}


def unknown_expression_names(expr: str) -> set[str]:
    """Names in an expression that will never be defined."""
    return expression_names(expr) - {"lead"} - set(_expression_env().globals)
