"""``expr:`` conditions of sequences: Jinja2 expressions in the sandbox and limits of
templates, compiled once, evaluated against plain lead data."""

from __future__ import annotations

from collections.abc import (
    Callable,
    Mapping,
)
from functools import lru_cache
from typing import Any

from jinja2 import (
    TemplateSyntaxError,
    nodes,
)
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

from nurture.authoring.lead_context import plain
from nurture.authoring.render_limits import RenderLimits
from nurture.authoring.sandbox import describe, make_environment


class ConditionError(ValueError):
    """An ``expr:`` condition that does not compile or cannot be evaluated for a lead."""


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
            with RenderLimits():
                return bool(compiled(lead=plain(lead)))
        except Exception as exc:  # the caller gets one error type, with the reason
            raise ConditionError(f"expression {expr!r}: {describe(exc)}") from exc

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


class SandboxExpressions:
    """``expr:`` conditions compiled in the sandbox once per source text (the
    :class:`nurture.core.conditions.Expressions` the engine and the funnel are handed)."""

    def __init__(self) -> None:
        self._compiled: dict[str, Callable[[Mapping[str, Any]], bool]] = {}

    def holds(self, source: str, lead: Mapping[str, Any]) -> bool:
        """Whether the expression holds; one that does not compile or evaluate does not."""
        try:
            test = self._compiled.get(source)
            if test is None:
                test = self._compiled[source] = compile_condition(source)
            return test(lead)
        except ConditionError:  # e.g. a missing attribute compared to a number
            return False
