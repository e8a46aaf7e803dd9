"""What every email step must satisfy: its templates exist, render for every sample lead of its
audience and locale, and the templates folder holds no template nothing uses."""

from __future__ import annotations

from itertools import product
from pathlib import Path

from nurture.authoring.lead_context import build_context, sample_lead
from nurture.authoring.problems import Problem
from nurture.authoring.templates import (
    SUBJECT_FILE,
    TEMPLATE_SUFFIXES,
    MissingTemplate,
    TemplateProblem,
    TemplateRenderer,
    is_safe_name,
)
from nurture.authoring.yamlsource import Loc
from nurture.program.structure import error, steps_of_kind
from nurture.sequences.loading import SourcedSequence
from nurture.sequences.spec import EmailStep, Step

SAMPLE_SENDER = ("Nurture", "hello@nurture.example")


SAMPLE_UNSUBSCRIBE_URL = "https://nurture.example/u/sample-token"


def check_emails(source: SourcedSequence, renderer: TemplateRenderer) -> list[Problem]:
    """Every email step's templates exist and render for every sample lead it may get."""
    problems: list[Problem] = []
    for i, step in steps_of_kind(source.loaded.spec, "email"):
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
            problems.append(error(source, message, *where))
            continue
        absent = [f"{name}.{s}" for s in TEMPLATE_SUFFIXES if renderer.find(name, "", s) is None]
        if absent:
            message = (
                f"unknown template '{name}': no {' or '.join(absent)} in {renderer.templates_dir}"
            )
            problems.append(error(source, message, *where))
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
        return error(source, message, "steps", i, "email", *loc)
    message = f"{exc.message} (in step '{step_id}' at {source.path}:{step_line}, for a {sample})"
    return Problem(exc.file, exc.line, message)


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
        for _, step in steps_of_kind(source.loaded.spec, "email")
        if step.email is not None
        for name, _ in _template_uses(step.email)
    }
    return [
        Problem(str(file), 1, "template not used by any sequence", "warning")
        for file in files
        if (name := template_name(file.relative_to(templates_dir))) and name not in used
    ]
