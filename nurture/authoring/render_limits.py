"""What authored content may cost to render (docs/authoring.md, "Limits").

A template, subject or expr: condition runs in validate, preview and the scheduler tick,
and one that never ends or fills the memory stops them all. One budget per render (time
on the thread's CPU clock, characters built), and the size of what an operation would
build, estimated before it is built."""

from __future__ import annotations

import re
import time
from collections.abc import (
    Callable,
    ItemsView,
    KeysView,
    Mapping,
    Sequence,
    ValuesView,
)
from contextvars import ContextVar
from dataclasses import dataclass
from string import Formatter
from typing import Any, cast

from jinja2.environment import TemplateModule
from jinja2.sandbox import SecurityError
from jinja2.utils import Namespace

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


class RenderLimit(SecurityError):
    """A template that exceeded a limit (time, string size, output size, range ...)."""


@dataclass
class _Budget:
    """What one render may still spend: its deadline (in the thread's CPU time, see
    RenderLimits), and what it has built so far."""

    deadline: float
    built: int = 0
    hooks: int = 0


# The budget of the render running in this thread (or task); None outside a render (Jinja
# folds constant expressions at compile time, through the same filters and operators).
_budget: ContextVar[_Budget | None] = ContextVar("nurture_render_budget", default=None)


class RenderLimits:
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


def check_time() -> None:
    budget = _budget.get()
    if budget is None:
        return
    budget.hooks += 1
    if budget.hooks % _CLOCK_EVERY == 0 and time.thread_time() > budget.deadline:
        raise RenderLimit(f"render took longer than {MAX_RENDER_SECONDS:g} s")


def check_size(size: int, what: str) -> None:
    if size > MAX_STRING:
        raise RenderLimit(f"{what} would be longer than {MAX_STRING:,} characters")


def sized(value: Any, what: str) -> Any:
    """``value``, unless it is a string (or bytes) longer than MAX_STRING, or takes the
    render past MAX_BUILT (strings counted by characters, containers by items)."""
    if isinstance(value, str | bytes | list | tuple | dict | set):
        if len(value) > MAX_STRING and isinstance(value, str | bytes):
            check_size(len(value), what)
        spend(len(value))
    return value


def spend(size: int) -> None:
    budget = _budget.get()
    if budget is not None:
        budget.built += size
        if budget.built > MAX_BUILT:
            raise RenderLimit(f"the template builds more than {MAX_BUILT:,} characters in all")


def text_size(value: Any, limit: int = MAX_STRING) -> int:
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


def count_of(value: Any) -> int:
    """An int argument for a size estimate (anything else: the call itself fails)."""
    return value if isinstance(value, int) else 0


def replaced_size(text: str | bytes, old: Any, new: Any, count: Any = -1) -> int:
    if not isinstance(old, str | bytes) or not isinstance(new, str | bytes):
        return len(text)
    found = text.count(old) if old else len(text) + 1  # type: ignore[arg-type]
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * max(0, len(new) - len(old))


def joined_size(separator: str | bytes, items: list[Any]) -> int:
    size = len(separator) * max(0, len(items) - 1)
    for item in items:
        size += text_size(item)
        if size > MAX_STRING:
            break
    return size


def translated_size(text: str | bytes, table: Any = None, *_: Any) -> int:
    if isinstance(table, Mapping):
        longest = max((text_size(v) for v in table.values()), default=1)
        return len(text) * max(1, longest)
    return len(text)


# The size of what a str (or bytes) method returns, for the methods whose arguments can make
# it far bigger than the string: (string, args, kwargs) -> characters.
METHOD_SIZES: dict[str, Callable[[Any, tuple[Any, ...], dict[str, Any]], int]] = {
    "center": lambda s, a, k: max(len(s), count_of(a[0] if a else k.get("width"))),
    "ljust": lambda s, a, k: max(len(s), count_of(a[0] if a else k.get("width"))),
    "rjust": lambda s, a, k: max(len(s), count_of(a[0] if a else k.get("width"))),
    "zfill": lambda s, a, k: max(len(s), count_of(a[0] if a else k.get("width"))),
    "expandtabs": lambda s, a, k: (
        len(s)
        + s.count("\t" if isinstance(s, str) else b"\t")
        * count_of(a[0] if a else k.get("tabsize", 8))
    ),
    "replace": lambda s, a, k: replaced_size(s, *a, **k),
    "translate": lambda s, a, k: translated_size(s, *a),
}


# %-format conversions: '%(key)-08.3f', '%*d', '%%'.
_PERCENT_SPEC = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[#0 +-]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d+))?"
    r"[hlL]?(?P<type>.)",
    re.DOTALL,
)


def _number(digits: str) -> int:
    return int(digits) if len(digits) < 10 else MAX_STRING + 1


def percent_size(template: str, values: Any) -> int:
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
        size += text_size(value)
        if size > MAX_STRING:
            break
    return size


def format_size(template: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> int:
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
        size += text_size(value)
        if size > MAX_STRING:
            break
    return size


# Filters whose arguments can make the result far bigger than their input:
# (value, *args, **kwargs) -> the result's size, checked before the filter runs.
def indent_size(s: Any, width: Any = 4, *_: Any, **__: Any) -> int:
    prefix = len(width) if isinstance(width, str) else count_of(width)
    text = str(s)
    return len(text) + (text.count("\n") + 1) * prefix


def wordwrap_size(s: Any, width: Any = 79, *args: Any, **kwargs: Any) -> int:
    wrapstring = args[1] if len(args) > 1 else kwargs.get("wrapstring")
    text = str(s)
    lines = len(text) // max(1, count_of(width)) + text.count("\n") + 1
    return len(text) + lines * len(wrapstring if isinstance(wrapstring, str) else "\n")


def tojson_size(value: Any, indent: Any = None, *_: Any, **__: Any) -> int:
    if count_of(indent) > MAX_JSON_INDENT:
        raise RenderLimit(f"|tojson indent of {indent}: at most {MAX_JSON_INDENT}")
    return text_size(value) * (1 + count_of(indent))


def urlize_size(value: Any, *args: Any, **kwargs: Any) -> int:
    extra = sum(len(x) for x in (*args[2:4], kwargs.get("target"), kwargs.get("rel")) if x)
    words = str(value).count(" ") + 1
    return 3 * len(str(value)) + words * (extra + 50)


FILTER_SIZES: dict[str, Callable[..., int]] = {
    "center": lambda value, width=80, *_, **__: max(text_size(value), count_of(width)),
    "format": lambda value, *args, **kwargs: percent_size(str(value), kwargs or args),
    "indent": indent_size,
    "wordwrap": wordwrap_size,
    "urlize": urlize_size,
    "replace": lambda s, old="", new="", count=None, *_, **__: replaced_size(
        str(s), old, new, -1 if count is None else count
    ),
    "join": lambda value, d="", *_, **__: joined_size(str(d), list(value)),
    "tojson": tojson_size,
    "slice": lambda value, slices=1, *_, **__: count_of(slices),
    "batch": lambda value, linecount=1, fill_with=None, *_, **__: (
        count_of(linecount) if fill_with is not None else 0
    ),
}
