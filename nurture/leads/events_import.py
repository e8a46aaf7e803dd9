"""``nurture events import``: bulk history from a JSON-lines or CSV file, through the same
ingest as the API (validation, dedupe keys, unknown-email policy, the pipeline).

Rows are numbered as people count them: in a JSON-lines file, line N is the file's Nth line;
in a CSV file, the header is row 1 (as in a spreadsheet). A bad row is reported with its
number and field, and skipped; the good rows are stored, in batches of one transaction each.
A CSV file has the columns email, type, occurred_at, dedupe_key, url, title, content_stage
and optionally properties (a JSON object); any other column becomes a property.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from nurture.db.session import transaction
from nurture.leads import rows
from nurture.leads.event_schema import EventIn
from nurture.leads.events import UnknownEmailPolicy, store_events
from nurture.leads.rows import ImportAborted
from nurture.leads.schema import field_errors
from nurture.scoring.rules import ScoringRules

DEFAULT_BATCH = 1000
EVENT_FIELDS = frozenset(EventIn.model_fields)
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")


@dataclass(frozen=True)
class RowError(rows.RowError):
    """Why one row was not stored."""

    prefix: ClassVar[str] = ""  # the caller says "line" or "row"


@dataclass
class EventsImportReport:
    """What an import did: ``created + duplicates + rejected + invalid == rows``."""

    file: str = ""
    unit: str = "line"  # "line" (JSON lines) or "row" (CSV)
    rows: int = 0
    created: int = 0
    duplicates: int = 0
    rejected: int = 0  # valid rows refused by policy (unknown or erased email)
    invalid: int = 0  # rows that are not a valid event
    leads_created: int = 0
    database_errors: int = 0
    errors: list[RowError] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON data."""
        return {
            "file": self.file,
            "rows": self.rows,
            "created": self.created,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "invalid": self.invalid,
            "leads_created": self.leads_created,
            "database_errors": self.database_errors,
            "errors": [
                {self.unit: e.row, "field": e.field, "message": e.message} for e in self.errors
            ],
        }


@dataclass(frozen=True)
class _Row:
    number: int
    event: EventIn


Processor = Callable[[list[int]], None]


def import_events(
    path: Path,
    sessions: sessionmaker[Session],
    *,
    now: datetime,
    unknown_email: UnknownEmailPolicy,
    default_timezone: str,
    process: Processor,
    batch_size: int = DEFAULT_BATCH,
    on_progress: Callable[[int], None] | None = None,
    rules: ScoringRules,
) -> EventsImportReport:
    """Import the events of ``path``; ``process`` gets the ids of each batch's new events.
    Raises ImportAborted if the file is unusable (before anything is written)."""
    records = _records(path)
    report = EventsImportReport(file=str(path), unit="line" if _is_json(path) else "row")
    batch: list[_Row] = []
    for number, data in records:
        report.rows += 1
        row = _validate(number, data, report)
        if row is not None:
            batch.append(row)
        if len(batch) >= batch_size:
            _store(sessions, batch, now, unknown_email, default_timezone, process, report, rules)
            batch = []
        if on_progress and report.rows % batch_size == 0:
            on_progress(report.rows)
    if batch:
        _store(sessions, batch, now, unknown_email, default_timezone, process, report, rules)
    if on_progress:
        on_progress(report.rows)
    return report


def check_file(path: Path) -> None:
    """Raise ImportAborted if the file cannot be read as events at all."""
    if not path.is_file():
        raise ImportAborted(f"{path}: no such file")
    if not _is_json(path) and path.suffix.lower() != ".csv":
        raise ImportAborted(
            f"{path}: unknown file type {path.suffix!r}; use .jsonl/.ndjson (JSON lines) or .csv"
        )
    if not _is_json(path):
        _csv_header(path)


def _is_json(path: Path) -> bool:
    return path.suffix.lower() in JSON_SUFFIXES


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(row number, data or the reason it is unreadable) for each non-blank row."""
    check_file(path)
    return _json_lines(path) if _is_json(path) else _csv_rows(path)


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    with path.open(encoding="utf-8-sig", errors="surrogateescape") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, f"not valid JSON: {exc.msg} (column {exc.colno})"
                continue
            yield number, data if isinstance(data, dict) else "expected a JSON object"


def _csv_header(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as stream:
        header = next(csv.reader(stream), None)
    if not header:
        raise ImportAborted(f"{path}: empty file; the first row must name the columns")
    names = [name.strip().lower() for name in header]
    for required in ("email", "type"):
        if required not in names:
            raise ImportAborted(f"{path}: the header (row 1) has no {required!r} column")
    return names


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    names = _csv_header(path)
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as stream:
        reader = csv.reader(stream)
        next(reader)
        number = 1
        while True:
            number += 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield number, f"not valid CSV: {exc}"
                continue
            if any(v.strip() for v in values):
                yield number, _csv_data(names, values)


def _csv_data(names: list[str], values: list[str]) -> dict[str, Any] | str:
    if len(values) > len(names) and any(v.strip() for v in values[len(names) :]):
        return f"{len(values)} values but the header has {len(names)} columns"
    data: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    for name, value in zip(names, values, strict=False):
        if not value.strip():
            continue
        if name == "properties":
            try:
                properties.update(json.loads(value))
            except (json.JSONDecodeError, TypeError, ValueError):
                return "properties: expected a JSON object"
        elif name in EVENT_FIELDS:
            data[name] = value
        else:
            properties[name] = value.strip()
    if properties:
        data["properties"] = properties
    return data


def _validate(number: int, data: dict[str, Any] | str, report: EventsImportReport) -> _Row | None:
    if isinstance(data, str):
        report.invalid += 1
        report.errors.append(RowError(number, "", data))
        return None
    try:
        return _Row(number, EventIn.model_validate(data))
    except ValidationError as exc:
        report.invalid += 1
        report.errors.extend(RowError(number, f, m) for f, m in field_errors(exc))
        return None


def _store(
    sessions: sessionmaker[Session],
    batch: list[_Row],
    now: datetime,
    unknown_email: UnknownEmailPolicy,
    default_timezone: str,
    process: Processor,
    report: EventsImportReport,
    rules: ScoringRules,
) -> None:
    try:
        with transaction(sessions) as session:
            stored = store_events(
                session,
                [row.event for row in batch],
                now=now,
                unknown_email=unknown_email,
                default_timezone=default_timezone,
                rules=rules,
            )
    except SQLAlchemyError as exc:
        first, last = batch[0].number, batch[-1].number
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        report.database_errors += 1
        report.invalid += len(batch)
        report.errors.append(
            RowError(first, "", f"database error, {first}-{last} not stored: {reason}")
        )
        return
    for row, result in zip(batch, stored.results, strict=True):
        if result.status == "rejected":
            report.errors.extend(RowError(row.number, f, m) for f, m in result.errors)
    report.created += stored.count("created")
    report.duplicates += stored.count("duplicate")
    report.rejected += stored.count("rejected")
    report.leads_created += stored.leads_created
    process(stored.new_event_ids)
