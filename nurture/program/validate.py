"""Validation of authored content beyond its shape: references, reachability, time zones,
and whether every email renders for a sample lead of every audience it is sent to."""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

from nurture.authoring.problems import Problem, has_errors, sort_key
from nurture.authoring.sources import yaml_files
from nurture.authoring.templates import (
    SUBJECT_FILE,
    TEMPLATE_SUFFIXES,
    ConditionError,
    MissingTemplate,
    TemplateProblem,
    TemplateRenderer,
    build_context,
    compile_condition,
    is_safe_name,
    sample_lead,
    unknown_expression_names,
)
from nurture.authoring.yamlsource import Loc
from nurture.core.conditions import Condition
from nurture.funnel.loading import lifecycle_problems
from nurture.scoring.checks import check_scoring_files
from nurture.sequences.loading import SourcedSequence, load_sources
from nurture.sequences.spec import EmailStep, SequenceSpec, Step

SAMPLE_SENDER = ("Nurture", "hello@nurture.example")
SAMPLE_UNSUBSCRIBE_URL = "https://nurture.example/u/sample-token"


@dataclass(frozen=True)
class ValidationReport:
    """What ``nurture validate`` found: counts for the summary, and the problems."""

    sequences: int
    templates: int
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not has_errors(self.problems)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]


def validate_path(sequences_path: Path, templates_dir: Path, default_locale: str) -> list[Problem]:
    """Every problem in a sequences folder (or file) and the templates it uses."""
    return validate_paths([sequences_path], templates_dir, default_locale).problems


def validate_paths(
    paths: Sequence[Path], templates_dir: Path, default_locale: str
) -> ValidationReport:
    """Validate sequence folders/files together (keys and audiences must not clash)."""
    sources, problems = load_sources(paths)
    # A file that did not load hides which templates it uses: "not used" would be guesswork.
    all_loaded = not has_errors(problems)
    problems += [
        Problem(str(p), 0, "no sequence files (*.yaml, *.yml) here")
        for p in paths
        if p.is_dir() and not yaml_files(p)
    ]
    problems += duplicate_keys(sources) + audience_overlaps(sources)
    problems += check_scoring_files(paths)
    problems += lifecycle_problems(paths, sources)
    for source in sources:
        problems += check_structure(source)
    templates = template_files(templates_dir)
    if sources and not templates_dir.is_dir():
        problems.append(Problem(str(templates_dir), 0, "templates folder not found"))
    elif sources:
        renderer = TemplateRenderer(templates_dir, default_locale)
        for source in sources:
            problems += check_emails(source, renderer)
        # One file validated alone does not use them all.
        if all_loaded and any(p.is_dir() for p in paths):
            problems += unused_templates(sources, templates_dir, templates)
    unique = sorted(set(problems), key=sort_key)
    return ValidationReport(len(sources), len(templates), unique)


# -- across sequences ---------------------------------------------------------------------


def duplicate_keys(sources: list[SourcedSequence]) -> list[Problem]:
    """Two files defining the same sequence key: error on the later one."""
    first: dict[str, SourcedSequence] = {}
    problems = []
    for source in sources:
        key = source.loaded.spec.key
        if key in first:
            other = first[key]
            problems.append(
                _error(
                    source, f"sequence key '{key}' is already used by {_at(other, 'key')}", "key"
                )
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
                problems.append(_error(source, message, "audience"))
    return problems


def _shared_pairs(a: SequenceSpec, b: SequenceSpec) -> list[str]:
    if not set(a.audience.lifecycle_stages) & set(b.audience.lifecycle_stages):
        return []
    personas = [p for p in b.audience.personas if p in a.audience.personas]
    stages = [s for s in b.audience.journey_stages if s in a.audience.journey_stages]
    return [f"({p}, {s.value})" for p, s in product(personas, stages)]


# -- one sequence's structure -------------------------------------------------------------


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
    for i, step in _steps_of_kind(source.loaded.spec, "branch"):
        assert step.branch is not None
        for name, target in (("then", step.branch.then), ("else", step.branch.else_)):
            if target is not None and target not in ids:
                message = f"steps[{i}].branch.{name}: no step '{target}'{_suggest(target, ids)}"
                problems.append(_error(source, message, "steps", i, "branch", name))
    return problems


def _condition_refs(source: SourcedSequence) -> list[Problem]:
    spec = source.loaded.spec
    problems = []
    for i, step in _steps_of_kind(spec, "branch"):
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
    return [_error(source, message, *loc, field_name)]


def _expression(source: SourcedSequence, expr: str, loc: Loc) -> list[Problem]:
    try:
        holds = compile_condition(expr)
    except ConditionError as exc:
        return [_error(source, str(exc), *loc)]
    unknown = unknown_expression_names(expr)
    if unknown:
        names = ", ".join(sorted(unknown))
        return [
            _error(source, f"expression {expr!r}: unknown name {names} (use lead.<field>)", *loc)
        ]
    audience = source.loaded.spec.audience
    for persona, stage in product(audience.personas, audience.journey_stages):
        try:
            holds(sample_lead(persona, stage.value, ""))
        except ConditionError as exc:
            message = f"{exc} (for a sample {persona}/{stage.value} lead)"
            if "sandbox" in str(exc):
                return [_error(source, message, *loc)]
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
        _error(source, f"step '{step.id}' is unreachable: no path from the first step", "steps", i)
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
    return [_error(source, message, "steps", first)]


def _step_map(source: SourcedSequence) -> list[Problem]:
    ids = [s.id for s in source.loaded.spec.steps]
    return [
        _error(source, f"versioning.step_map: '{old}' maps to no step '{new}'", *loc)
        for old, new in source.loaded.spec.versioning.step_map.items()
        if new not in ids
        for loc in [("versioning", "step_map", old)]
    ]


# -- emails ------------------------------------------------------------------------------


def check_emails(source: SourcedSequence, renderer: TemplateRenderer) -> list[Problem]:
    """Every email step's templates exist and render for every sample lead it may get."""
    problems: list[Problem] = []
    for i, step in _steps_of_kind(source.loaded.spec, "email"):
        missing = _missing_templates(source, i, step, renderer)
        problems += missing
        if not missing:
            problems += _locale_variants(source, i, step, renderer)
            problems += _render_step(source, i, step, renderer)
    return problems


def _template_uses(step: EmailStep) -> list[tuple[str, Loc]]:
    """Template names a step uses, with the path of the YAML value naming each."""
    uses: list[tuple[str, Loc]] = [(step.template, ("template",))]
    uses += [
        (o.template, ("locales", locale, "template"))
        for locale, o in step.locales.items()
        if o.template
    ]
    return uses


def _missing_templates(
    source: SourcedSequence, i: int, step: Step, renderer: TemplateRenderer
) -> list[Problem]:
    assert step.email is not None
    problems = []
    for name, loc in _template_uses(step.email):
        where = ("steps", i, "email", *loc)
        if not is_safe_name(name):
            message = f"template name {name!r} must be a relative path inside the templates folder"
            problems.append(_error(source, message, *where))
            continue
        absent = [f"{name}.{s}" for s in TEMPLATE_SUFFIXES if renderer.find(name, "", s) is None]
        if absent:
            message = (
                f"unknown template '{name}': no {' or '.join(absent)} in {renderer.templates_dir}"
            )
            problems.append(_error(source, message, *where))
    return problems


def _locale_variants(
    source: SourcedSequence, i: int, step: Step, renderer: TemplateRenderer
) -> list[Problem]:
    """A listed locale whose body would silently fall back to the default language."""
    assert step.email is not None
    problems = []
    for locale, override in step.email.locales.items():
        if override.template:
            continue  # a template of its own, in its own language
        name = step.email.template
        fallback = [s for s in TEMPLATE_SUFFIXES if _falls_back(renderer, name, locale, s)]
        if fallback:
            message = (
                f"locale '{locale}': no {name}.{locale}.{fallback[0]}: "
                "the default-locale body will be sent"
            )
            where = ("steps", i, "email", "locales", locale)
            problems.append(Problem(source.path, source.line(*where), message, "warning"))
    return problems


def _falls_back(renderer: TemplateRenderer, name: str, locale: str, suffix: str) -> bool:
    found = renderer.find(name, locale, suffix)
    return found is None or found == f"{name}.{suffix}"


def _render_step(
    source: SourcedSequence, i: int, step: Step, renderer: TemplateRenderer
) -> list[Problem]:
    """Render for each sample lead; report each broken line once, not once per sample."""
    assert step.email is not None
    spec = source.loaded.spec
    locales = [renderer.default_locale, *step.email.locales]
    audience = product(spec.audience.personas, spec.audience.journey_stages, locales)
    found: dict[tuple[str, int, str], Problem] = {}
    for persona, stage, locale in audience:
        template, subject = step.email.for_locale(locale)
        lead = sample_lead(persona, stage.value, locale)
        context = build_context(
            lead, *SAMPLE_SENDER, SAMPLE_UNSUBSCRIBE_URL, spec.key, spec.name, step.id
        )
        try:
            renderer.render_email(template, subject, locale, context)
        except MissingTemplate:
            continue  # reported once, at the step, by _missing_templates
        except TemplateProblem as exc:
            sample = f"sample {persona}/{stage.value} lead, locale {locale}"
            found.setdefault(
                (exc.file, exc.line, exc.message),
                _render_problem(source, i, step.email, locale, exc, sample),
            )
    return list(found.values())


def _render_problem(
    source: SourcedSequence,
    i: int,
    email: EmailStep,
    locale: str,
    exc: TemplateProblem,
    sample: str,
) -> Problem:
    step_line = source.line("steps", i)
    step_id = source.loaded.spec.steps[i].id
    if exc.file == SUBJECT_FILE:
        override = email.locales.get(locale)
        loc: Loc = ("locales", locale, "subject") if override and override.subject else ("subject",)
        message = f"step '{step_id}' subject: {exc.message} (for a {sample})"
        return _error(source, message, "steps", i, "email", *loc)
    message = f"{exc.message} (in step '{step_id}' at {source.path}:{step_line}, for a {sample})"
    return Problem(exc.file, exc.line, message)


# -- templates folder ---------------------------------------------------------------------


def template_files(templates_dir: Path) -> list[Path]:
    """Every template file (``*.html``, ``*.txt``) in the templates folder, sorted."""
    if not templates_dir.is_dir():
        return []
    suffixes = {f".{s}" for s in TEMPLATE_SUFFIXES}
    return sorted(p for p in templates_dir.rglob("*") if p.suffix in suffixes and p.is_file())


def template_name(relative: Path) -> str | None:
    """``a/welcome.ko.html`` -> ``a/welcome``; None for layouts and partials (``_*``)."""
    if any(part.startswith("_") for part in relative.parts):
        return None
    stem = relative.with_suffix("")
    if "." in stem.name:
        stem = stem.with_suffix("")  # a locale variant: welcome.ko
    return stem.as_posix()


def unused_templates(
    sources: list[SourcedSequence], templates_dir: Path, files: list[Path]
) -> list[Problem]:
    """Templates no sequence uses: warnings (dead content, or a typo in a sequence)."""
    used = {
        name
        for source in sources
        for _, step in _steps_of_kind(source.loaded.spec, "email")
        if step.email is not None
        for name, _ in _template_uses(step.email)
    }
    return [
        Problem(str(file), 1, "template not used by any sequence", "warning")
        for file in files
        if (name := template_name(file.relative_to(templates_dir))) and name not in used
    ]


# -- helpers ------------------------------------------------------------------------------


def _steps_of_kind(spec: SequenceSpec, kind: str) -> list[tuple[int, Step]]:
    return [(i, s) for i, s in enumerate(spec.steps) if s.kind == kind]


def _error(source: SourcedSequence, message: str, *loc: str | int) -> Problem:
    return Problem(source.path, source.line(*loc), message)


def _at(source: SourcedSequence, *loc: str | int) -> str:
    return f"{source.path}:{source.line(*loc)}"


def _suggest(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.7)
    return f" (did you mean '{close[0]}'?)" if close else ""
