"""The Jinja2 sandbox templates run in: immutable, strict about undefined names, bounded
by :mod:`nurture.authoring.render_limits` in every operator, filter, loop and output write,
and reading only files inside the templates folder (a link that resolves outside it is
refused)."""

from __future__ import annotations

import os
from collections.abc import (
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
)
from functools import update_wrapper, wraps
from itertools import islice
from pathlib import Path
from typing import Any, cast

from jinja2 import (
    BaseLoader,
    Environment,
    StrictUndefined,
    TemplateNotFound,
    UndefinedError,
    nodes,
    pass_environment,
)
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.filters import make_attrgetter
from jinja2.loaders import split_template_path
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import generate_lorem_ipsum

from nurture.authoring.render_limits import (
    FILTER_SIZES,
    MAX_INT_BITS,
    MAX_OUTPUT,
    MAX_POWER,
    MAX_RANGE,
    MAX_REPEAT,
    MAX_STRING,
    METHOD_SIZES,
    RenderLimit,
    check_size,
    check_time,
    count_of,
    format_size,
    joined_size,
    percent_size,
    sized,
    spend,
    text_size,
)


class TemplateOutsideFolder(Exception):
    """A template name whose file resolves (through a symlink) outside the templates folder."""

    def __init__(self, name: str, real_path: str) -> None:
        super().__init__(
            f"template '{name}' is a link to {real_path}, outside the templates folder: refused"
        )


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
    check_size(count_of(n) * count_of(max) * 12, "lipsum()")
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
        return sized(super().call_binop(context, operator, left, right), f"'{operator}'")

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        check_time()
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, str | bytes):
            name = getattr(obj, "__name__", "")
            if name == "join" and args:
                args = (list(args[0]), *args[1:])
                check_size(joined_size(owner, args[0]), "join()")
            elif name in METHOD_SIZES:
                check_size(METHOD_SIZES[name](owner, args, kwargs), f"{name}()")
        elif isinstance(owner, int) and getattr(obj, "__name__", "") == "to_bytes":
            check_size(count_of(args[0] if args else kwargs.get("length")), "to_bytes()")
        result = super().call(context, obj, *args, **kwargs)
        return sized(result, f"{getattr(obj, '__name__', 'the call')}()")

    def getattr(self, obj: Any, attribute: str) -> Any:
        check_time()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        check_time()
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        formatter = super().wrap_str_format(value)
        if formatter is None:
            return None
        template, is_map = value.__self__, value.__name__ == "format_map"

        def bounded(*args: Any, **kwargs: Any) -> str:
            mapping = args[0] if is_map and args and isinstance(args[0], Mapping) else kwargs
            check_size(format_size(template, () if is_map else args, mapping), "format()")
            return cast(str, sized(formatter(*args, **kwargs), "format()"))

        return update_wrapper(bounded, value)

    @staticmethod
    def iterate(iterable: Iterable[Any]) -> Iterator[Any]:
        """A for loop's items, the time checked before each."""
        for item in iterable:
            check_time()
            yield item

    @staticmethod
    def concat_operands(operands: tuple[Any, ...]) -> tuple[Any, ...]:
        """The operands of ``~``, refused if their text would be too long."""
        size = sum(text_size(x) for x in operands)
        check_size(size, "'~'")
        spend(size)
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
            spend(size)
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
        spend(size)
        return "".join(written)


# Parts of output taken at once between two size checks: an email has a few dozen.
_OUTPUT_BATCH = 64


def _finalize(value: Any) -> Any:
    """Every ``{{ ... }}`` before it is written: the time, and the size of its text."""
    check_time()
    if not isinstance(value, str):
        check_size(text_size(value), "the value written")
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
        check_size(percent_size(template, right), "'%'")


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` (a Jinja filter) with the time checked, its input's text, its result, and
    for the filters of FILTER_SIZES the result's size before it runs."""
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0
    estimate = FILTER_SIZES.get(name)

    @wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        check_time()
        if len(args) > skip:
            check_size(text_size(args[skip]), f"the value of |{name}")
            if name == "join" and isinstance(args[skip], Iterator):  # measured, then joined
                args = (*args[:skip], list(args[skip]), *args[skip + 1 :])
            if estimate is not None:
                check_size(estimate(*args[skip:], **kwargs), f"|{name}")
        return sized(func(*args, **kwargs), f"|{name}")

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
        check_time()
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


def describe(exc: BaseException) -> str:
    if isinstance(exc, TemplateOutsideFolder | RenderLimit):
        return str(exc)
    if isinstance(exc, SecurityError):
        return f"refused by the sandbox: {exc}"
    if isinstance(exc, UndefinedError):
        return f"undefined variable: {exc.message}"
    if isinstance(exc, TemplateNotFound):
        return f"template '{exc.name}' not found"
    return f"{type(exc).__name__}: {exc}"
