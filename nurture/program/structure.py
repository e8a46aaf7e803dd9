"""What one sequence's structure must satisfy (step ids, branch targets, conditions,
reachability, no loop without a wait, the step map), and what sequences must not share
(keys, audiences)."""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from itertools import product

from nurture.authoring.expressions import (
    ConditionError,
    compile_condition,
    unknown_expression_names,
)
from nurture.authoring.lead_context import sample_lead
from nurture.authoring.problems import Problem
from nurture.authoring.yamlsource import Loc
from nurture.core.conditions import Condition
from nurture.sequences.loading import SourcedSequence
from nurture.sequences.spec import SequenceSpec, Step


def duplicate_keys(sources: list[SourcedSequence]) -> list[Problem]:
    """Two files defining the same sequence key: error on the later one."""
    first: dict[str, SourcedSequence] = {}
    problems = []
    for source in sources:
        key = source.loaded.spec.key
        if key in first:
            other = first[key]
            problems.append(
                error(source, f"sequence key '{key}' is already used by {_at(other, 'key')}", "key")
            )
        else:
            first[key] = source
    return problems


def audience_overlaps(sources: list[SourcedSequence]) -> list[Problem]:
    """Two sequences claiming the same (persona, journey stage) for the same lifecycle
    stages: a lead would not know which to enter. Error on the later file."""
    problems = []
    for n, source in enumerate(sources):
        for other in sources[:n]:
            shared = _shared_pairs(other.loaded.spec, source.loaded.spec)
            if shared:
                message = (
                    f"audience overlaps sequence '{other.loaded.spec.key}' "
                    f"({_at(other, 'audience')}): both claim {', '.join(shared)}"
                )
                problems.append(error(source, message, "audience"))
    return problems


def _shared_pairs(a: SequenceSpec, b: SequenceSpec) -> list[str]:
    if not set(a.audience.lifecycle_stages) & set(b.audience.lifecycle_stages):
        return []
    personas = [p for p in b.audience.personas if p in a.audience.personas]
    stages = [s for s in b.audience.journey_stages if s in a.audience.journey_stages]
    return [f"({p}, {s.value})" for p, s in product(personas, stages)]


def check_structure(source: SourcedSequence) -> list[Problem]:
    """Step ids, branch targets, condition references, reachability, loops, step map."""
    return (
        _step_ids(source)
        + _branch_targets(source)
        + _condition_refs(source)
        + _unreachable(source)
        + _loops(source)
        + _step_map(source)
    )


def _step_ids(source: SourcedSequence) -> list[Problem]:
    first: dict[str, int] = {}
    problems = []
    for i, step in enumerate(source.loaded.spec.steps):
        line = source.line("steps", i, "id")
        if step.id in first:
            message = f"duplicate step id '{step.id}' (first at line {first[step.id]})"
            problems.append(Problem(source.path, line, message))
        else:
            first[step.id] = line
    return problems


def _branch_targets(source: SourcedSequence) -> list[Problem]:
    ids = [s.id for s in source.loaded.spec.steps]
    problems = []
    for i, step in steps_of_kind(source.loaded.spec, "branch"):
        assert step.branch is not None
        for name, target in (("then", step.branch.then), ("else", step.branch.else_)):
            if target is not None and target not in ids:
                message = f"steps[{i}].branch.{name}: no step '{target}'{_suggest(target, ids)}"
                problems.append(error(source, message, "steps", i, "branch", name))
    return problems


def _condition_refs(source: SourcedSequence) -> list[Problem]:
    spec = source.loaded.spec
    problems = []
    for i, step in steps_of_kind(spec, "branch"):
        assert step.branch is not None
        for condition, loc in walk_conditions(step.branch.if_, ("steps", i, "branch", "if")):
            problems += _email_ref(source, i, condition, loc)
            if condition.expr is not None:
                problems += _expression(source, condition.expr, (*loc, "expr"))
    return problems


def walk_conditions(condition: Condition, loc: Loc) -> Iterator[tuple[Condition, Loc]]:
    """A condition and every condition nested in it (all, any, not), with their paths."""
    yield condition, loc
    for name, children in (("all", condition.all), ("any", condition.any)):
        for n, child in enumerate(children or []):
            yield from walk_conditions(child, (*loc, name, n))
    if condition.not_ is not None:
        yield from walk_conditions(condition.not_, (*loc, "not"))


def _email_ref(source: SourcedSequence, at: int, cond: Condition, loc: Loc) -> list[Problem]:
    field_name = "opened" if cond.opened is not None else "clicked"
    ref = cond.opened if cond.opened is not None else cond.clicked
    if ref is None:
        return []
    steps = source.loaded.spec.steps
    ids = [s.id for s in steps]
    if ref not in ids:
        message = f"{field_name}: no step '{ref}' in this sequence{_suggest(ref, ids)}"
    elif steps[ids.index(ref)].kind != "email":
        kind = steps[ids.index(ref)].kind
        message = f"{field_name}: step '{ref}' is a {kind} step, not an email step"
    elif ids.index(ref) >= at:
        message = f"{field_name}: email step '{ref}' comes after this branch (it is not sent yet)"
    else:
        return []
    return [error(source, message, *loc, field_name)]


def _expression(source: SourcedSequence, expr: str, loc: Loc) -> list[Problem]:
    try:
        holds = compile_condition(expr)
    except ConditionError as exc:
        return [error(source, str(exc), *loc)]
    unknown = unknown_expression_names(expr)
    if unknown:
        names = ", ".join(sorted(unknown))
        return [
            error(source, f"expression {expr!r}: unknown name {names} (use lead.<field>)", *loc)
        ]
    audience = source.loaded.spec.audience
    for persona, stage in product(audience.personas, audience.journey_stages):
        try:
            holds(sample_lead(persona, stage.value, ""))
        except ConditionError as exc:
            message = f"{exc} (for a sample {persona}/{stage.value} lead)"
            if "sandbox" in str(exc):
                return [error(source, message, *loc)]
            return [Problem(source.path, source.line(*loc), message, "warning")]
    return []


def successors(spec: SequenceSpec, i: int) -> list[int]:
    """Where step ``i`` can lead: the next step, branch targets; nothing after an exit."""
    step = spec.steps[i]
    following = [i + 1] if i + 1 < len(spec.steps) else []
    if step.kind in ("exit", "move_to_stage"):
        return []
    if step.branch is None:
        return following
    ids = [s.id for s in spec.steps]
    targets = [ids.index(t) for t in (step.branch.then, step.branch.else_) if t in ids]
    return targets + ([] if step.branch.else_ else following)


def _unreachable(source: SourcedSequence) -> list[Problem]:
    spec = source.loaded.spec
    seen, todo = {0}, [0]
    while todo:
        for nxt in successors(spec, todo.pop()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return [
        error(source, f"step '{step.id}' is unreachable: no path from the first step", "steps", i)
        for i, step in enumerate(spec.steps)
        if i not in seen
    ]


def _loops(source: SourcedSequence) -> list[Problem]:
    """A cycle with no wait in it would run (and send) forever without pause."""
    spec = source.loaded.spec
    nodes = {i for i, s in enumerate(spec.steps) if s.kind != "wait"}
    edges = {i: [j for j in successors(spec, i) if j in nodes] for i in nodes}
    while True:  # peel off steps no remaining step leads to; what is left lies on a cycle
        targets = {j for i in nodes for j in edges[i]}
        sources = {i for i in nodes if i not in targets}
        if not sources:
            break
        nodes -= sources
    if not nodes:
        return []
    looped = [spec.steps[i].id for i in sorted(nodes)]
    first = min(i for i in nodes if spec.steps[i].kind == "branch")
    message = f"loop without a wait: steps {', '.join(looped)} would repeat without pause"
    return [error(source, message, "steps", first)]


def _step_map(source: SourcedSequence) -> list[Problem]:
    ids = [s.id for s in source.loaded.spec.steps]
    return [
        error(source, f"versioning.step_map: '{old}' maps to no step '{new}'", *loc)
        for old, new in source.loaded.spec.versioning.step_map.items()
        if new not in ids
        for loc in [("versioning", "step_map", old)]
    ]


def steps_of_kind(spec: SequenceSpec, kind: str) -> list[tuple[int, Step]]:
    return [(i, s) for i, s in enumerate(spec.steps) if s.kind == kind]


def error(source: SourcedSequence, message: str, *loc: str | int) -> Problem:
    return Problem(source.path, source.line(*loc), message)


def _at(source: SourcedSequence, *loc: str | int) -> str:
    return f"{source.path}:{source.line(*loc)}"


def _suggest(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.7)
    return f" (did you mean '{close[0]}'?)" if close else ""
