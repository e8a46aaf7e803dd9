"""Email templates: sandboxed Jinja2, strict about undefined names, escaped HTML.

A template name such as ``finance_leader/awareness/welcome`` means two files under the
templates folder, ``welcome.html`` and ``welcome.txt``, with optional locale variants
(``welcome.ko.html``) picked ``ko-KR`` -> ``ko`` -> no suffix. The render context is plain
data (dicts, strings, numbers): never ORM objects, so a template cannot reach the database."""

from __future__ import annotations

import os
import re
import time
import traceback
from collections.abc import (
    Callable,
    Generator,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    Sequence,
    ValuesView,
)
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache, update_wrapper, wraps
from itertools import islice
from pathlib import Path
from string import Formatter
from typing import TYPE_CHECKING, Any, Protocol, cast

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
    pass_environment,
)
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.environment import TemplateModule
from jinja2.filters import make_attrgetter
from jinja2.loaders import split_template_path
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import Namespace, generate_lorem_ipsum

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
# Limits on what authored content may cost to render (docs/authoring.md, "Limits"): a
# template, subject or expr: condition runs in validate, preview and the scheduler tick, and
# one that never ends or fills the memory stops them all.
# Largest string or list a template may build with '*' (a sandbox must not eat the memory).
MAX_REPEAT = 100_000
# Largest exponent of '**': 10 ** 100 is as big as an email's numbers get.
MAX_POWER = 100
# Largest integer '*' and '**' may build, in bits (about 10 ** 1233): chained powers
# ((2 ** 100) ** 100) ** 100, or a number squared in a loop, take minutes and gigabytes.
MAX_INT_BITS = 4_096
# Items a range() may give (Jinja's sandbox allows 100,000): no email loops further, and
# nested loops are stopped by MAX_RENDER_SECONDS.
MAX_RANGE = 10_000
# Characters of any string a template builds (center(10 ** 9), '%900000000s', s ~ s ...):
# an email body is a few kilobytes, and Gmail cuts one at 102 KB.
MAX_STRING = 1_000_000
# Characters of one rendered part (HTML, text or subject), and of any block a template
# buffers (a macro, {% set %} or {% filter %} body): checked as it is written.
MAX_OUTPUT = 1_000_000
# Characters (and list items) one render may build in all, kept or not: 10,000 strings of
# 100 KB each stay under MAX_STRING one by one, and fill a gigabyte together.
MAX_BUILT = 20_000_000
# Seconds of CPU one email (subject, HTML and text) or one expr: condition may take to
# render: a runaway template fails fast and its message is recorded as failed instead of
# holding the scheduler. Checked from the sandbox's hooks (calls, attributes, filters,
# output, loop iterations), no threads or signals, so it works in worker threads.
MAX_RENDER_SECONDS = 2.0
# Hooks between two looks at the clock (time.thread_time costs about 0.5 us a call).
_CLOCK_EVERY = 64
# Spaces of JSON indentation tojson may add per level.
MAX_JSON_INDENT = 64
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


class RenderLimit(SecurityError):
    """A template that exceeded a limit (time, string size, output size, range ...)."""


@dataclass
class _Budget:
    """What one render may still spend: its deadline (in the thread's CPU time, see
    _RenderLimits), and what it has built so far."""

    deadline: float
    built: int = 0
    hooks: int = 0


# The budget of the render running in this thread (or task); None outside a render (Jinja
# folds constant expressions at compile time, through the same filters and operators).
_budget: ContextVar[_Budget | None] = ContextVar("nurture_render_budget", default=None)


class _RenderLimits:
    """Renders inside this block share one budget: MAX_RENDER_SECONDS and MAX_BUILT (an
    enclosing budget, the whole email's, is kept). A class: a renderer enters one four
    times an email, and a generator-based context manager costs microseconds each."""

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = None
        if _budget.get() is None:
            # CPU time of this thread, not the wall clock: a worker thread waiting for the
            # GIL is not the template's fault, and freezegun (every engine test) stops
            # time.monotonic.
            self._token = _budget.set(_Budget(time.thread_time() + MAX_RENDER_SECONDS))

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _budget.reset(self._token)


def _check_time() -> None:
    budget = _budget.get()
    if budget is None:
        return
    budget.hooks += 1
    if budget.hooks % _CLOCK_EVERY == 0 and time.thread_time() > budget.deadline:
        raise RenderLimit(f"render took longer than {MAX_RENDER_SECONDS:g} s")


def _check_size(size: int, what: str) -> None:
    if size > MAX_STRING:
        raise RenderLimit(f"{what} would be longer than {MAX_STRING:,} characters")


def _sized(value: Any, what: str) -> Any:
    """``value``, unless it is a string (or bytes) longer than MAX_STRING, or takes the
    render past MAX_BUILT (strings counted by characters, containers by items)."""
    if isinstance(value, str | bytes | list | tuple | dict | set):
        if len(value) > MAX_STRING and isinstance(value, str | bytes):
            _check_size(len(value), what)
        _spend(len(value))
    return value


def _spend(size: int) -> None:
    budget = _budget.get()
    if budget is not None:
        budget.built += size
        if budget.built > MAX_BUILT:
            raise RenderLimit(f"the template builds more than {MAX_BUILT:,} characters in all")


def _text_size(value: Any, limit: int = MAX_STRING) -> int:
    """About how long ``str(value)`` is, without building it; counted only up to ``limit``
    (then ``limit + 1``). A list of 100,000 references to one long string is cheap to hold
    and gigabytes to print."""
    size = 0
    todo = [value]
    while todo and size <= limit:
        item = todo.pop()
        if isinstance(item, str | bytes | bytearray):
            size += len(item)
        elif isinstance(item, bool | float) or item is None:
            size += 8
        elif isinstance(item, int):
            size += item.bit_length() * 3 // 10 + 2  # decimal digits
        elif isinstance(item, dict | Mapping):
            size += 4 * len(item)
            todo += [*item.keys(), *item.values()]
        elif isinstance(item, list | tuple | set | frozenset | KeysView | ValuesView | ItemsView):
            size += 2 * len(item)
            todo += item
        elif isinstance(item, Namespace):
            todo.append(object.__getattribute__(item, "_Namespace__attrs"))
        elif isinstance(item, TemplateModule):
            size += sum(map(len, cast(Any, item)._body_stream))
        else:
            size += 64  # a loop, macro, cycler or range prints a short repr
    return min(size, limit + 1)


def _count(value: Any) -> int:
    """An int argument for a size estimate (anything else: the call itself fails)."""
    return value if isinstance(value, int) else 0


def _replaced_size(text: str | bytes, old: Any, new: Any, count: Any = -1) -> int:
    if not isinstance(old, str | bytes) or not isinstance(new, str | bytes):
        return len(text)
    found = text.count(old) if old else len(text) + 1  # type: ignore[arg-type]
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * max(0, len(new) - len(old))


def _joined_size(separator: str | bytes, items: list[Any]) -> int:
    size = len(separator) * max(0, len(items) - 1)
    for item in items:
        size += _text_size(item)
        if size > MAX_STRING:
            break
    return size


def _translated_size(text: str | bytes, table: Any = None, *_: Any) -> int:
    if isinstance(table, Mapping):
        longest = max((_text_size(v) for v in table.values()), default=1)
        return len(text) * max(1, longest)
    return len(text)


# The size of what a str (or bytes) method returns, for the methods whose arguments can make
# it far bigger than the string: (string, args, kwargs) -> characters.
_METHOD_SIZES: dict[str, Callable[[Any, tuple[Any, ...], dict[str, Any]], int]] = {
    "center": lambda s, a, k: max(len(s), _count(a[0] if a else k.get("width"))),
    "ljust": lambda s, a, k: max(len(s), _count(a[0] if a else k.get("width"))),
    "rjust": lambda s, a, k: max(len(s), _count(a[0] if a else k.get("width"))),
    "zfill": lambda s, a, k: max(len(s), _count(a[0] if a else k.get("width"))),
    "expandtabs": lambda s, a, k: (
        len(s)
        + s.count("\t" if isinstance(s, str) else b"\t")
        * _count(a[0] if a else k.get("tabsize", 8))
    ),
    "replace": lambda s, a, k: _replaced_size(s, *a, **k),
    "translate": lambda s, a, k: _translated_size(s, *a),
}

# %-format conversions: '%(key)-08.3f', '%*d', '%%'.
_PERCENT_SPEC = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[#0 +-]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d+))?"
    r"[hlL]?(?P<type>.)",
    re.DOTALL,
)


def _number(digits: str) -> int:
    return int(digits) if len(digits) < 10 else MAX_STRING + 1


def _percent_size(template: str, values: Any) -> int:
    """The length of ``template % values`` (about), without building it."""
    size = len(template)
    positional = list(values) if isinstance(values, tuple) else [values]
    index = 0
    for spec in _PERCENT_SPEC.finditer(template):
        if spec["type"] == "%":
            continue
        for part in (spec["width"], spec["precision"]):
            if part == "*":
                raise RenderLimit("a '*' width in a % format is not allowed in templates")
            size += _number(part) if part else 0
        if spec["key"] is not None and isinstance(values, Mapping):
            value = values.get(spec["key"])
        else:
            value, index = (positional[index] if index < len(positional) else None), index + 1
        size += _text_size(value)
        if size > MAX_STRING:
            break
    return size


def _format_size(template: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> int:
    """The length of ``template.format(*args, **kwargs)`` (about), without building it."""
    size = 0
    auto = 0
    for literal, field, spec, _ in Formatter().parse(template):
        size += len(literal)
        if field is None:
            continue
        if spec and "{" in spec:
            raise RenderLimit("a computed width in a format string is not allowed in templates")
        size += sum(_number(digits) for digits in re.findall(r"\d+", spec or ""))
        name = re.split(r"[.\[]", field, maxsplit=1)[0]
        if not name:
            name, auto = str(auto), auto + 1
        if name.isdigit():
            value = args[int(name)] if int(name) < len(args) else None
        else:
            value = kwargs.get(name)
        size += _text_size(value)
        if size > MAX_STRING:
            break
    return size


def _bounded_range(*args: int) -> range:
    """range(), at most MAX_RANGE items."""
    numbers = range(*args)
    try:
        items = len(numbers)
    except OverflowError:
        items = MAX_RANGE + 1
    if items > MAX_RANGE:
        raise RenderLimit(f"range() of {items:,} items: at most {MAX_RANGE:,}")
    return numbers


def _bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    _check_size(_count(n) * _count(max) * 12, "lipsum()")
    return cast(str, generate_lorem_ipsum(n, html, min, max))


class _LimitedCodeGenerator(CodeGenerator):
    """Jinja's code generator, plus the checks no sandbox hook sees: every loop iteration
    checks the time (a nested loop with an empty body calls nothing), and every ``~``
    concatenation its size (it calls str() on its operands, a list's of every item)."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        iterate = nodes.EnvironmentAttribute("iterate", lineno=node.lineno)
        checked = nodes.Call(iterate, [node.iter], [], None, None, lineno=node.lineno)
        loop = nodes.For(
            node.target,
            checked,
            node.body,
            node.else_,
            node.test,
            node.recursive,
            lineno=node.lineno,
        )
        super().visit_For(loop, frame)

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            func_name = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            func_name = "markup_join"
        else:
            func_name = "str_join"
        self.write(f"{func_name}(environment.concat_operands((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(")))")


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, plus limits on time, and on the size of every string, number, range and
    output a template builds, so that it can neither hang nor exhaust memory. Sizes are
    checked before the string is built where its arguments can make it big (widths,
    repeats, joins, replacements), and after otherwise."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _LimitedCodeGenerator

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=_finalize, **options)
        self.globals["range"] = _bounded_range
        self.globals["lipsum"] = _bounded_lipsum
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}
        self.filters["sum"] = _bounded_sum

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return _sized(super().call_binop(context, operator, left, right), f"'{operator}'")

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _check_time()
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, str | bytes):
            name = getattr(obj, "__name__", "")
            if name == "join" and args:
                args = (list(args[0]), *args[1:])
                _check_size(_joined_size(owner, args[0]), "join()")
            elif name in _METHOD_SIZES:
                _check_size(_METHOD_SIZES[name](owner, args, kwargs), f"{name}()")
        elif isinstance(owner, int) and getattr(obj, "__name__", "") == "to_bytes":
            _check_size(_count(args[0] if args else kwargs.get("length")), "to_bytes()")
        result = super().call(context, obj, *args, **kwargs)
        return _sized(result, f"{getattr(obj, '__name__', 'the call')}()")

    def getattr(self, obj: Any, attribute: str) -> Any:
        _check_time()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _check_time()
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        formatter = super().wrap_str_format(value)
        if formatter is None:
            return None
        template, is_map = value.__self__, value.__name__ == "format_map"

        def bounded(*args: Any, **kwargs: Any) -> str:
            mapping = args[0] if is_map and args and isinstance(args[0], Mapping) else kwargs
            _check_size(_format_size(template, () if is_map else args, mapping), "format()")
            return cast(str, _sized(formatter(*args, **kwargs), "format()"))

        return update_wrapper(bounded, value)

    @staticmethod
    def iterate(iterable: Iterable[Any]) -> Iterator[Any]:
        """A for loop's items, the time checked before each."""
        for item in iterable:
            _check_time()
            yield item

    @staticmethod
    def concat_operands(operands: tuple[Any, ...]) -> tuple[Any, ...]:
        """The operands of ``~``, refused if their text would be too long."""
        size = sum(_text_size(x) for x in operands)
        _check_size(size, "'~'")
        _spend(size)
        return operands

    @staticmethod
    def concat(parts: Iterable[str]) -> str:
        """Join rendered output (the email, or a block a template buffers), stopping soon
        after it passes MAX_OUTPUT: the limit is raised in the template, at a line writing.
        The stream is taken _OUTPUT_BATCH parts at a time (in C), not part by part."""
        if isinstance(parts, list):
            size = sum(map(len, parts))
            if size > MAX_OUTPUT:
                raise RenderLimit(f"output longer than {MAX_OUTPUT:,} characters")
            _spend(size)
            return "".join(parts)
        written: list[str] = []
        size = 0
        stream = iter(parts)
        while batch := list(islice(stream, _OUTPUT_BATCH)):
            written += batch
            size += sum(map(len, batch))
            if size > MAX_OUTPUT:
                limit = RenderLimit(f"output longer than {MAX_OUTPUT:,} characters")
                if isinstance(stream, Generator):
                    stream.throw(limit)  # raised in the template, with its file and line
                raise limit
        _spend(size)
        return "".join(written)


# Parts of output taken at once between two size checks: an email has a few dozen.
_OUTPUT_BATCH = 64


def _finalize(value: Any) -> Any:
    """Every ``{{ ... }}`` before it is written: the time, and the size of its text."""
    _check_time()
    if not isinstance(value, str):
        _check_size(_text_size(value), "the value written")
    return value


def _check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_POWER:
        raise SecurityError(f"exponent {right} is too large")
    if operator == "*":
        for seq, count in ((left, right), (right, left)):
            sized = isinstance(seq, str | list | tuple) and isinstance(count, int)
            if sized and len(seq) * count > MAX_REPEAT:
                raise SecurityError("repeating a string or list this many times")
    both_ints = isinstance(left, int) and isinstance(right, int)
    if both_ints and operator in ("*", "**"):
        bits = left.bit_length() + right.bit_length() if operator == "*" else 0
        if operator == "**" and right > 0:
            bits = left.bit_length() * right
        if bits > MAX_INT_BITS:
            raise RenderLimit(f"a number of about {bits:,} bits: at most {MAX_INT_BITS:,}")
    elif operator == "+" and isinstance(left, str | bytes | list | tuple):
        if isinstance(right, type(left)) or isinstance(left, type(right)):
            limit = MAX_STRING if isinstance(left, str | bytes) else MAX_REPEAT
            if len(left) + len(right) > limit:
                raise RenderLimit(f"'+' would build more than {limit:,} items")
    elif operator == "%" and isinstance(left, str | bytes):
        template = left if isinstance(left, str) else left.decode("latin-1")
        _check_size(_percent_size(template, right), "'%'")


# Filters whose arguments can make the result far bigger than their input:
# (value, *args, **kwargs) -> the result's size, checked before the filter runs.
def _indent_size(s: Any, width: Any = 4, *_: Any, **__: Any) -> int:
    prefix = len(width) if isinstance(width, str) else _count(width)
    text = str(s)
    return len(text) + (text.count("\n") + 1) * prefix


def _wordwrap_size(s: Any, width: Any = 79, *args: Any, **kwargs: Any) -> int:
    wrapstring = args[1] if len(args) > 1 else kwargs.get("wrapstring")
    text = str(s)
    lines = len(text) // max(1, _count(width)) + text.count("\n") + 1
    return len(text) + lines * len(wrapstring if isinstance(wrapstring, str) else "\n")


def _tojson_size(value: Any, indent: Any = None, *_: Any, **__: Any) -> int:
    if _count(indent) > MAX_JSON_INDENT:
        raise RenderLimit(f"|tojson indent of {indent}: at most {MAX_JSON_INDENT}")
    return _text_size(value) * (1 + _count(indent))


def _urlize_size(value: Any, *args: Any, **kwargs: Any) -> int:
    extra = sum(len(x) for x in (*args[2:4], kwargs.get("target"), kwargs.get("rel")) if x)
    words = str(value).count(" ") + 1
    return 3 * len(str(value)) + words * (extra + 50)


_FILTER_SIZES: dict[str, Callable[..., int]] = {
    "center": lambda value, width=80, *_, **__: max(_text_size(value), _count(width)),
    "format": lambda value, *args, **kwargs: _percent_size(str(value), kwargs or args),
    "indent": _indent_size,
    "wordwrap": _wordwrap_size,
    "urlize": _urlize_size,
    "replace": lambda s, old="", new="", count=None, *_, **__: _replaced_size(
        str(s), old, new, -1 if count is None else count
    ),
    "join": lambda value, d="", *_, **__: _joined_size(str(d), list(value)),
    "tojson": _tojson_size,
    "slice": lambda value, slices=1, *_, **__: _count(slices),
    "batch": lambda value, linecount=1, fill_with=None, *_, **__: (
        _count(linecount) if fill_with is not None else 0
    ),
}


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` (a Jinja filter) with the time checked, its input's text, its result, and
    for the filters of _FILTER_SIZES the result's size before it runs."""
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0
    estimate = _FILTER_SIZES.get(name)

    @wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_time()
        if len(args) > skip:
            _check_size(_text_size(args[skip]), f"the value of |{name}")
            if name == "join" and isinstance(args[skip], Iterator):  # measured, then joined
                args = (*args[:skip], list(args[skip]), *args[skip + 1 :])
            if estimate is not None:
                _check_size(estimate(*args[skip:], **kwargs), f"|{name}")
        return _sized(func(*args, **kwargs), f"|{name}")

    return bounded


@pass_environment
def _bounded_sum(
    environment: Environment, iterable: Iterable[Any], attribute: Any = None, start: Any = 0
) -> Any:
    """Jinja's |sum, adding one item at a time with the limits of '+' (a sum of lists copies
    the total at every step)."""
    if attribute is not None:
        iterable = map(make_attrgetter(environment, attribute), iterable)
    total = start
    for item in iterable:
        _check_time()
        _check_binop("+", total, item)
        total = total + item
    return total


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
        with _RenderLimits():  # one budget for the whole email
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
            with _RenderLimits():
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
            with _RenderLimits():
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
    if isinstance(exc, TemplateOutsideFolder | RenderLimit):
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
            with _RenderLimits():
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
