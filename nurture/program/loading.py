"""Loading the program once per process: from the YAML folder (published to the database as
it is read) or, for a process without the folder, from the latest published versions; and
refreshing it when a rules file changes or another process publishes new rules."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from nurture.authoring.problems import Problem
from nurture.core.versions import content_version
from nurture.db.session import transaction
from nurture.funnel import loading as lifecycle_files
from nurture.program.program import LIFECYCLE, RULE_KINDS, SCORING, Program, RulesDocument
from nurture.program.publishing import latest_row, latest_versions, publish_rules
from nurture.scoring import loading as scoring_files
from nurture.sequences.catalog import Catalog, publish
from nurture.sequences.loading import load_sequences

log = logging.getLogger(__name__)
Stamp = tuple[int, int] | None


class AuthoringError(Exception):
    """The sequences folder has errors; the engine refuses to run them."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class _Read:
    """One rules file as read: its value and document, or the error that stopped it."""

    value: Any = None
    document: RulesDocument | None = None
    error: Exception | None = None


def load_program(sessions: sessionmaker[Session], folder: Path, now: datetime) -> Program:
    """The program of ``folder`` (published as read), or the latest published one when the
    process has no such folder. Raises AuthoringError when the sequences have errors."""
    if not folder.is_dir():
        with sessions() as session:
            return _from_db(session, Catalog.from_db(session))
    loaded, problems = load_sequences(folder)
    errors = [p for p in problems if p.is_error]
    if errors:
        raise AuthoringError(errors)
    reads = {kind: _read(kind, folder) for kind in RULE_KINDS}
    with transaction(sessions) as session:
        catalog = publish(session, loaded, now)
        publish_rules(session, [r.document for r in reads.values() if r.document], now)
        # A file with errors at start: the last version published before stays in force.
        for kind, read in reads.items():
            if read.error is not None:
                reads[kind] = replace(_published(session, kind), error=read.error)
    program = _assemble(catalog, reads, {k: _stamp(k, folder) for k in RULE_KINDS})
    return replace(program, warnings=tuple(problems))


def refresh_program(
    program: Program, sessions: sessionmaker[Session], folder: Path, now: datetime
) -> Program:
    """The program with the rules that changed since it was loaded: a rules file edited in
    ``folder`` (published when good; a file with errors keeps the last good rules), or, in
    a process without the folder, a version another process published."""
    if not folder.is_dir():
        with sessions() as session:
            if latest_versions(session) == dict(program.versions):
                return program
            return _from_db(session, program.catalog)
    stamps = {kind: _stamp(kind, folder) for kind in RULE_KINDS}
    changed = [k for k in RULE_KINDS if stamps[k] != program.stamps.get(k)]
    if not changed:
        return program
    reads = {kind: _read(kind, folder) for kind in changed}
    with transaction(sessions) as session:
        publish_rules(session, [r.document for r in reads.values() if r.document], now)
    return _merge(program, reads, stamps)


def _from_db(session: Session, catalog: Catalog) -> Program:
    return _assemble(catalog, {kind: _published(session, kind) for kind in RULE_KINDS}, {})


def _published(session: Session, kind: str) -> _Read:
    """The latest published version of ``kind`` (no rules when none was published)."""
    row = latest_row(session, kind)
    if row is None:
        return _Read(_value(kind, None, ""))
    document = row.document
    return _Read(
        _value(kind, document, row.source_path), _document(kind, document, row.source_path)
    )


def _read(kind: str, folder: Path) -> _Read:
    path = _path(kind, folder)
    try:
        spec = _LOADERS[kind](path)
    except (scoring_files.ScoringError, lifecycle_files.LifecycleConfigError) as exc:
        return _Read(error=exc)
    document = (
        None if spec is None else spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    )
    return _Read(_value(kind, document, str(path)), _document(kind, document, str(path)))


_LOADERS: dict[str, Callable[[Path], Any]] = {
    SCORING: scoring_files.load_spec,
    LIFECYCLE: lambda path: lifecycle_files.load_lifecycle(path.parent),
}


def _value(kind: str, document: dict[str, Any] | None, path: str) -> Any:
    if kind == SCORING:
        return scoring_files.rules_from_document(document, path)
    return lifecycle_files.spec_from_document(document)


def _document(kind: str, document: dict[str, Any] | None, path: str) -> RulesDocument:
    return RulesDocument(kind, content_version(document), document, path)


def _path(kind: str, folder: Path) -> Path:
    if kind == SCORING:
        return scoring_files.scoring_path(folder)
    return lifecycle_files.lifecycle_path(folder)


def _stamp(kind: str, folder: Path) -> Stamp:
    try:
        stat = _path(kind, folder).stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _assemble(catalog: Catalog, reads: dict[str, _Read], stamps: dict[str, Stamp]) -> Program:
    empty = Program(catalog, None, None, stamps=stamps)
    return _merge(empty, reads, stamps)


def _merge(program: Program, reads: dict[str, _Read], stamps: dict[str, Stamp]) -> Program:
    """``program`` with each read applied: a good read replaces the kind's rules and clears
    its error; a failed one keeps the rules in force and records the error."""
    changes: dict[str, Any] = {"stamps": stamps, "versions": dict(program.versions)}
    for kind, read in reads.items():
        if read.error is not None:
            log.error(
                "%s rules have errors; the last good ones stay in force:\n%s", kind, read.error
            )
            changes[f"{kind}_error"] = read.error
            if read.document is None:
                continue
        field_name = "scoring_rules" if kind == SCORING else "lifecycle_spec"
        changes[field_name] = read.value
        changes.setdefault(f"{kind}_error", None)
        if read.document is not None:
            changes["versions"][kind] = read.document.version
    return replace(program, **changes)
