"""``nurture validate`` and ``nurture preview``: checking and looking at authored content."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.table import Table

from nurture.authoring.lead_context import TEMPLATE_LEAD_FIELDS, sample_lead
from nurture.authoring.problems import Problem, display_path
from nurture.authoring.templates import TemplateProblem, TemplateRenderer
from nurture.authoring.yamlsource import LineMap, YamlSourceError, load_yaml
from nurture.cli.output import SafeConsole, echo, echo_json
from nurture.delivery.compose import PendingSend, compose_email
from nurture.delivery.mime import OutgoingEmail, build_message, serialize
from nurture.leads.schema import LeadIn, field_errors, match_persona
from nurture.program.validate import ValidationReport, validate_paths
from nurture.sequences.engine import SendEmail
from nurture.sequences.loading import SourcedSequence, load_sources
from nurture.sequences.spec import SequenceSpec, Step
from nurture.settings import Settings, load_settings
from nurture.tracking.links import TrackedLink

console = SafeConsole()

PathsArg = Annotated[
    list[Path] | None,
    typer.Argument(help="Sequence folders or files (default: the configured sequences folder)."),
]
TemplatesOpt = Annotated[
    Path | None, typer.Option("--templates", help="Templates folder (default: configured).")
]
SequencesOpt = Annotated[
    Path | None, typer.Option("--sequences", help="Sequences folder (default: configured).")
]


def validate(
    paths: PathsArg = None,
    templates: TemplatesOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
) -> None:
    """Check sequences and templates; print file:line problems; exit 1 on any error."""
    settings = _settings()
    report = validate_paths(
        paths or [settings.sequences_dir],
        templates or settings.templates_dir,
        settings.default_locale,
    )
    problems = [p.relative_to(Path.cwd()) for p in report.problems]
    if as_json:
        echo_json(_json_report(report, problems), ensure_ascii=False, indent=2)
    else:
        for problem in problems:
            echo(str(problem))
        # Notes only when nothing is wrong: errors come first.
        for note in report.notes if report.ok else []:
            echo(f"note: {note}")
        echo(_summary(report))
    raise typer.Exit(0 if report.ok else 1)


def _json_report(report: ValidationReport, problems: list[Problem]) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "sequences": report.sequences,
        "templates": report.templates,
        "errors": [p.to_json() for p in problems],
        "notes": report.notes,
    }


def _summary(report: ValidationReport) -> str:
    counts = f"{_count(report.sequences, 'sequence')}, {_count(report.templates, 'template')}"
    if not report.problems:
        return f"{counts}: no problems"
    parts = [_count(len(report.errors), "error")] if report.errors else []
    parts += [_count(len(report.warnings), "warning")] if report.warnings else []
    return f"{counts}: {', '.join(parts)}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def preview(
    sequence: Annotated[str, typer.Argument(help="Sequence key.")],
    step: Annotated[str, typer.Argument(help="Id of an email step.")],
    lead: Annotated[
        Path | None, typer.Option("--lead", help="JSON or YAML file with lead fields.")
    ] = None,
    persona: Annotated[str | None, typer.Option("--persona", help="Sample lead persona.")] = None,
    locale: Annotated[str | None, typer.Option("--locale", help="Locale, e.g. ko.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Where to write the files.")] = Path("preview"),
    sequences: SequencesOpt = None,
    templates: TemplatesOpt = None,
) -> None:
    """Render one email step (subject, HTML, text, .eml) to files, for a sample or given lead."""
    settings = _settings()
    source = _find_sequence(sequences or settings.sequences_dir, sequence)
    email_step = _find_email_step(source.loaded.spec, step)
    lead_file = _read_lead(lead) if lead else None
    spec = source.loaded.spec
    choice = PreviewChoice(lead_file, persona, locale, settings.default_locale)
    lead_data = _preview_lead(spec, choice)
    chosen_locale = str(lead_data["locale"])
    composed = _render(settings, spec, email_step, lead_data, chosen_locale, templates)
    suffix = "" if chosen_locale == settings.default_locale else f".{chosen_locale}"
    folder = out / spec.key / f"{email_step.id}{suffix}"
    written = _write(folder, composed)
    _show(composed, written, lead_data)
    echo(f"preview written to {display_path(folder.resolve())}")


def _settings() -> Settings:
    try:
        return load_settings()
    except ValidationError as exc:  # a bad NURTURE_* variable: say which, no traceback
        for error in exc.errors(include_url=False):
            name = "NURTURE_" + "_".join(str(p) for p in error["loc"]).upper()
            echo(f"{name}: {error['msg']}", err=True)
        raise typer.Exit(2) from exc


def _fail(message: str) -> NoReturn:
    echo(message, err=True)
    raise typer.Exit(1)


def _find_sequence(folder: Path, key: str) -> SourcedSequence:
    sources, problems = load_sources([folder])
    found = next((s for s in sources if s.loaded.spec.key == key), None)
    if found is not None:
        return found
    for problem in problems:
        echo(str(problem.relative_to(Path.cwd())), err=True)
    known = ", ".join(sorted(s.loaded.spec.key for s in sources)) or "none"
    _fail(f"no sequence '{key}' in {folder} (sequences: {known})")


def _find_email_step(spec: SequenceSpec, step_id: str) -> Step:
    emails = ", ".join(s.id for s in spec.steps if s.email is not None) or "none"
    step = spec.step(step_id)
    if step is None:
        _fail(f"sequence '{spec.key}' has no step '{step_id}' (email steps: {emails})")
    if step.email is None:
        _fail(f"step '{step_id}' is a {step.kind} step, not an email step (email steps: {emails})")
    return step


@dataclass(frozen=True)
class LeadFile:
    """The fields of a ``--lead`` file and the line of each."""

    path: Path
    fields: dict[str, Any]
    lines: LineMap


@dataclass(frozen=True)
class PreviewChoice:
    """What the person asked for: a lead file, and the ``--persona``/``--locale`` flags."""

    lead_file: LeadFile | None
    persona: str | None
    locale: str | None
    default_locale: str

    def where(self, field_name: str) -> str:
        """Where a field's value came from, for an error message."""
        if field_name == "persona" and self.persona:
            return "--persona"
        if field_name == "locale" and self.locale:
            return "--locale"
        top = field_name.split(".")[0]
        if self.lead_file is not None and top in self.lead_file.fields:
            line = self.lead_file.lines.line_for(field_name.split("."))
            return f"{display_path(self.lead_file.path)}:{line}"
        return "NURTURE_DEFAULT_LOCALE" if top == "locale" else "the sample lead"

    def problem(self, field_name: str, message: str) -> str:
        """``lead.yaml:3: timezone: ...``, or ``--locale: ...`` (the flag names the field)."""
        where = self.where(field_name)
        named = "" if where.startswith("--") else f"{field_name}: "
        return f"{where}: {named}{message}"


def _read_lead(path: Path) -> LeadFile:
    """Lead fields from a JSON or YAML file; unknown fields are an error, not a surprise."""
    try:
        data, lines = load_yaml(path)
    except YamlSourceError as exc:
        _fail("\n".join(str(p) for p in exc.problems))
    if not isinstance(data, dict):
        _fail(f"{path}:{lines.line_for(())}: a lead file must be a mapping of lead fields")
    for name in data:
        if name not in TEMPLATE_LEAD_FIELDS:
            allowed = ", ".join(TEMPLATE_LEAD_FIELDS)
            _fail(f"{path}:{lines.line_for((name,))}: unknown lead field '{name}' ({allowed})")
    if not isinstance(data.get("attributes", {}), dict):
        _fail(f"{path}:{lines.line_for(('attributes',))}: attributes must be a mapping")
    # An empty value in YAML (``title:``) means "no title", as an empty CSV cell does.
    fields = {k: "" if v is None and k != "company_size" else v for k, v in data.items()}
    return LeadFile(path, fields, lines)


def _preview_lead(spec: SequenceSpec, choice: PreviewChoice) -> dict[str, Any]:
    """A sample lead of the audience, overridden by the file's fields and the options,
    checked as an imported lead would be (and against the sequence's audience)."""
    fields = choice.lead_file.fields if choice.lead_file else {}
    locale = choice.locale or str(fields.get("locale") or choice.default_locale)
    persona = choice.persona or str(fields.get("persona") or spec.audience.personas[0])
    stage = str(fields.get("journey_stage") or spec.audience.journey_stages[0].value)
    data = {**sample_lead(persona, stage, locale), **fields, "persona": persona, "locale": locale}
    try:
        lead = LeadIn.model_validate(data).model_dump(mode="json")
    except ValidationError as exc:
        _fail("\n".join(choice.problem(f, m) for f, m in field_errors(exc)))
    return {**lead, "persona": _audience_persona(spec, lead, choice)}


def _audience_persona(spec: SequenceSpec, lead: dict[str, Any], choice: PreviewChoice) -> str:
    """The lead's persona as the audience spells it; an error if the sequence never gets
    a lead of its persona or journey stage."""
    audience = spec.audience
    try:
        persona = match_persona(lead["persona"], audience.personas)
    except ValueError:
        _fail(
            f"{choice.where('persona')}: persona {lead['persona']!r} is not in the audience of "
            f"sequence '{spec.key}' (personas: {', '.join(audience.personas)})"
        )
    stages = [s.value for s in audience.journey_stages]
    if lead["journey_stage"] not in stages:
        _fail(
            f"{choice.where('journey_stage')}: journey stage {lead['journey_stage']!r} is not in "
            f"the audience of sequence '{spec.key}' (journey stages: {', '.join(stages)})"
        )
    return persona


@dataclass(frozen=True)
class PreviewEmail:
    """What ``nurture preview`` writes: the email as the engine composes it, its raw bytes,
    the links it tracks and the template files it came from."""

    email: OutgoingEmail
    raw: bytes
    links: tuple[TrackedLink, ...]
    html_file: str
    text_file: str


def _render(
    settings: Settings,
    spec: SequenceSpec,
    step: Step,
    lead: dict[str, Any],
    locale: str,
    templates: Path | None,
) -> PreviewEmail:
    """The email exactly as the engine would send it (links, UTM, pixel), for message id 0:
    its tokens name no message, so the web app answers 404 to them. Nothing is stored."""
    assert step.email is not None
    template, subject = step.email.for_locale(locale)
    renderer = TemplateRenderer(templates or settings.templates_dir, settings.default_locale)
    decision = SendEmail(step.id, template, subject, locale, next_step=None)
    pending = PendingSend(0, 0, decision, lead, spec.key, spec.name)
    prefix = f"preview.{spec.key}.{step.id}"
    try:
        email, links = compose_email(
            settings, renderer, pending, datetime.now(UTC), message_id_prefix=prefix
        )
        raw = serialize(build_message(email))
    except TemplateProblem as exc:
        _fail(str(exc.to_problem().relative_to(Path.cwd())))
    except ValueError as exc:  # the message cannot be built, e.g. a bad lead address
        _fail(f"cannot build the message: {exc}")
    html_file = renderer.path_of(renderer.find(template, locale, "html") or "")
    text_file = renderer.path_of(renderer.find(template, locale, "txt") or "")
    return PreviewEmail(email, raw, links, html_file, text_file)


def _write(folder: Path, preview: PreviewEmail) -> dict[str, Path]:
    files = {
        "subject": folder / "subject.txt",
        "html": folder / "body.html",
        "text": folder / "body.txt",
        "eml": folder / "message.eml",
    }
    try:
        folder.mkdir(parents=True, exist_ok=True)
        files["subject"].write_text(preview.email.subject + "\n", encoding="utf-8")
        files["html"].write_text(preview.email.html, encoding="utf-8")
        files["text"].write_text(preview.email.text, encoding="utf-8")
        files["eml"].write_bytes(preview.raw)
    except OSError as exc:
        _fail(f"cannot write the preview to {folder}: {exc.strerror}")
    return files


def _show(preview: PreviewEmail, files: dict[str, Path], lead: dict[str, Any]) -> None:
    table = Table(title=f"Preview: {preview.email.subject}", show_lines=False)
    table.add_column("part")
    table.add_column("file", overflow="fold")
    table.add_column("from", overflow="fold")
    table.add_row("subject", display_path(files["subject"].resolve()), "sequence YAML")
    table.add_row("html", display_path(files["html"].resolve()), display_path(preview.html_file))
    table.add_row("text", display_path(files["text"].resolve()), display_path(preview.text_file))
    table.add_row("message", display_path(files["eml"].resolve()), "nurture.delivery.mime")
    console.print(table)
    who = f"{lead.get('persona')}/{lead.get('journey_stage')}, locale {lead.get('locale')}"
    console.print(f"lead: {lead.get('email')} ({who})", markup=False, highlight=False)
    # Where each tracked link goes, UTM tags included; unwrapped, so a URL can be copied.
    for link in preview.links:
        echo(f"link {link.position}: {link.url}")
