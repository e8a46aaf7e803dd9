"""What the tests share besides fixtures: where things are, and helpers by concern
(``support.engine``, ``support.funnel``, ``support.web``, ``support.smtp_server``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from nurture.authoring.expressions import SandboxExpressions
from nurture.funnel.funnel import Funnel
from nurture.funnel.loading import load_lifecycle
from nurture.runtime import Runtime
from nurture.scoring.loading import load_rules
from nurture.sequences.catalog import Catalog
from nurture.settings import Settings

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"
# The shipped program: what `make demo` runs and what users start from.
SHIPPED = REPO / "sequences"


def use_scoring(rt: Runtime, path: Path) -> None:
    """Score with the rules of ``path`` from now on (the engine fixtures have none)."""
    rules = load_rules(path)
    rt.use(replace(rt.program, scoring_rules=rules, scoring_error=None))


def use_program_rules(rt: Runtime, folder: Path) -> None:
    """Decide with the scoring and lifecycle rules of ``folder`` (and ``rt``'s sequences)."""
    rules = load_rules(folder / "scoring.yaml")
    lifecycle = load_lifecycle(folder)
    program = replace(rt.program, scoring_rules=rules, lifecycle_spec=lifecycle)
    rt.use(replace(program, scoring_error=None, lifecycle_error=None))


def shipped_funnel(catalog: Catalog, settings: Settings) -> Funnel:
    """The funnel of the shipped scoring and lifecycle rules over ``catalog`` (what a
    process reading the settings' default folder, ``sequences/``, decides with)."""
    return Funnel(
        settings=settings,
        catalog=catalog,
        lifecycle=load_lifecycle(SHIPPED),
        scoring=load_rules(SHIPPED / "scoring.yaml"),
        expressions=SandboxExpressions(),
    )
