"""Importing leads from a CSV file: streamed, validated row by row, upserted by email in
batches (one transaction each), then enrolled by the audience rules.

Rows are numbered as in a spreadsheet: the header is row 1, the first data row is row 2,
and a blank line is a row too. A bad row is reported (row, field, reason) and skipped; the
good rows are imported. Only a problem with the file itself (unreadable, no ``email``
column) stops the import, and it does so before anything is written.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from nurture.db.models import Lead
from nurture.db.session import transaction
from nurture.funnel.funnel import Funnel
from nurture.funnel.loading import LifecycleConfigError
from nurture.funnel.machine import Reason, ReasonKind
from nurture.funnel.stages import change_stage, record_entries, refusal_of
from nurture.leads.csv_file import Column, open_csv, read_header, row_data
from nurture.leads.rows import ImportAborted, RowError
from nurture.leads.schema import (
    ATTRIBUTES_FIELD,
    LeadIn,
    canonical_timezone,
    field_errors,
    lead_context,
    merged_attributes,
)
from nurture.scoring.ledger import refresh_fit
from nurture.scoring.loading import ScoringError
from nurture.sequences.enrollment import enroll_many

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 500
ROW_CONVENTION = "rows are numbered as in a spreadsheet: the header is row 1"
STAGE_FIELD = "lifecycle_stage"
ACTOR = "import"


@dataclass
class ImportReport:
    """What an import did. ``created + updated + skipped == rows``."""

    file: str = ""
    rows: int = 0
    created: int = 0
    updated: int = 0
    skipped: int = 0
    database_errors: int = 0  # batches rolled back (their rows are counted as skipped)
    enrolled: Counter[str] = field(default_factory=Counter)  # by sequence key
    not_enrolled: Counter[str] = field(default_factory=Counter)  # by reason (audience Outcome)
    errors: list[RowError] = field(default_factory=list)

    @property
    def imported(self) -> int:
        return self.created + self.updated

    def to_json(self) -> dict[str, Any]:
        """The report as JSON data."""
        return {
            "file": self.file,
            "rows": self.rows,
            "created": self.created,
            "updated": self.updated,
            "skipped": self.skipped,
            "database_errors": self.database_errors,
            "enrolled": dict(sorted(self.enrolled.items())),
            "not_enrolled": dict(sorted(self.not_enrolled.items())),
            "errors": [{"row": e.row, "field": e.field, "message": e.message} for e in self.errors],
        }


@dataclass(frozen=True)
class _Row:
    number: int
    lead: LeadIn


def funnel_for_import(build: Callable[[], Funnel]) -> Funnel:
    """The funnel rows are imported with (``rt.funnel``); ImportAborted, before anything is
    written, when the scoring or lifecycle rules it needs have errors."""
    try:
        return build()
    except ScoringError as exc:
        raise ImportAborted(f"the scoring rules have errors; fix them first:\n{exc}") from None
    except LifecycleConfigError as exc:  # rows may move leads through the funnel
        raise ImportAborted(f"lifecycle.yaml has errors; fix them first:\n{exc}") from None


def import_leads(
    path: Path,
    session_factory: sessionmaker[Session],
    funnel: Funnel,
    *,
    now: datetime,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import the leads in the CSV file at ``path``; ``on_progress`` gets the number of
    rows read so far, every ``batch_size`` rows and at the end. Raises ImportAborted if
    the file is unusable (before anything is written)."""
    if now.tzinfo is None or batch_size < 1:
        raise ValueError("now must be timezone-aware and batch_size at least 1")
    default_zone = funnel.settings.default_timezone
    zone = canonical_timezone(default_zone)
    if zone is None:
        raise ImportAborted(f"the default time zone {default_zone!r} is not an IANA zone")
    report = ImportReport(file=str(path))
    context = lead_context(funnel.catalog.personas())
    batch: list[_Row] = []
    with open_csv(path) as stream:
        reader = csv.reader(stream)
        columns = read_header(path, reader)
        for number, values in _records(reader, report):
            report.rows += 1
            row = _validate(number, values, columns, context, report)
            if row is not None:
                batch.append(row)
            if len(batch) >= batch_size:
                _write_batch(session_factory, batch, funnel, now, zone, report)
                batch = []
            if on_progress and report.rows % batch_size == 0:
                on_progress(report.rows)
        if batch:
            _write_batch(session_factory, batch, funnel, now, zone, report)
    if on_progress:
        on_progress(report.rows)
    return report


def _records(reader: Iterator[list[str]], report: ImportReport) -> Iterator[tuple[int, list[str]]]:
    """(row number, values) for each non-blank record; unparseable records are reported."""
    number = 1
    while True:
        number += 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            report.rows += 1
            _skip(report, [RowError(number, "", f"not valid CSV: {exc}")])
            continue
        if any(v.strip() for v in values):
            yield number, values


def _validate(
    number: int,
    values: list[str],
    columns: list[Column],
    context: dict[str, Any],
    report: ImportReport,
) -> _Row | None:
    data, problems = row_data(number, values, columns)
    if not problems:
        try:
            return _Row(number, LeadIn.model_validate(data, context=context))
        except ValidationError as exc:
            problems = [RowError(number, f, _plain(m)) for f, m in field_errors(exc)]
    _skip(report, problems)
    return None


def _plain(message: str) -> str:
    return "is required (every row needs one)" if message == "Field required" else message


def _skip(report: ImportReport, problems: Sequence[RowError]) -> None:
    report.skipped += 1
    report.errors.extend(problems)


def _write_batch(
    session_factory: sessionmaker[Session],
    batch: list[_Row],
    funnel: Funnel,
    now: datetime,
    default_timezone: str,
    report: ImportReport,
) -> None:
    """Upsert and enroll one batch in one transaction; a database error skips the batch."""
    for attempt in (1, 2):
        try:
            with transaction(session_factory) as session:
                result = _upsert_and_enroll(session, batch, funnel, now, default_timezone)
        except IntegrityError as exc:
            # Most likely another import inserted one of these emails meanwhile: the
            # second attempt finds it and updates it.
            if attempt == 1:
                log.info("retrying rows %d-%d after %s", batch[0].number, batch[-1].number, exc)
                continue
            _batch_failed(report, batch, exc)
        except SQLAlchemyError as exc:
            _batch_failed(report, batch, exc)
        else:
            _count(report, result)
        return


@dataclass
class _BatchResult:
    created: int = 0
    updated: int = 0
    skipped: int = 0
    errors: list[RowError] = field(default_factory=list)
    enrolled: Counter[str] = field(default_factory=Counter)
    not_enrolled: Counter[str] = field(default_factory=Counter)
    # Leads inserted by this batch (their first stage is recorded), and the stage moves of
    # existing leads, in file order: (row number, email key, target stage).
    new: set[str] = field(default_factory=set)
    moves: list[tuple[int, str, str]] = field(default_factory=list)


def _upsert_and_enroll(
    session: Session, batch: list[_Row], funnel: Funnel, now: datetime, default_timezone: str
) -> _BatchResult:
    result = _BatchResult()
    leads = _upsert(session, batch, default_timezone, result, now)
    # scoring.yaml's profile rules
    refresh_fit(session, [lead.id for lead in leads.values()], now, rules=funnel.rules)
    _record_stages(session, leads, result, funnel, now)
    catalog = funnel.catalog
    for outcome in enroll_many(session, list(leads.values()), catalog, now):
        if outcome.enrollment is not None:
            result.enrolled[outcome.enrollment.sequence_key] += 1
        else:
            result.not_enrolled[outcome.decision.outcome.value] += 1
    return result


def _upsert(
    session: Session,
    batch: list[_Row],
    default_timezone: str,
    result: _BatchResult,
    now: datetime,
) -> dict[str, Lead]:
    """Update the leads that exist, insert the others; a fixed number of statements. A row
    asking an existing lead for a stage move the funnel refuses is skipped whole."""
    keys = list(dict.fromkeys(row.lead.email.lower() for row in batch))
    query = select(Lead).where(func.lower(Lead.email).in_(keys))
    existing = {lead.email.lower(): lead for lead in session.scalars(query)}
    # Each existing lead's stage after the rows so far (moves are applied after the batch).
    stages = {key: lead.lifecycle_stage for key, lead in existing.items()}
    new: dict[str, dict[str, Any]] = {}
    touched: dict[str, None] = {}  # emails with a row applied, in file order
    for row in batch:
        key = row.lead.email.lower()
        stored = existing[key].attributes if key in existing else new.get(key, {}).get("attributes")
        if not _attributes_fit(row, stored, result):
            continue
        if key in existing and not _stage_allowed(row, key, stages, result, now):
            continue  # nothing of the row is applied
        touched[key] = None
        if key in existing:
            _update(existing[key], row.lead, now)
        elif key in new:
            # The same email twice in a file: the later row updates what the earlier gave.
            _merge(new[key], row.lead)
        else:
            # Stamped with the import's moment (``--now`` rehearses another one).
            values = row.lead.new_lead_values(default_timezone)
            new[key] = {**values, "created_at": now, "updated_at": now}
            result.created += 1
            continue
        result.updated += 1
    if new:
        # One INSERT for the batch (ORM inserts with RETURNING go row by row on SQLite).
        session.execute(insert(Lead), list(new.values()))
        inserted = select(Lead).where(func.lower(Lead.email).in_(list(new)))
        existing.update((lead.email.lower(), lead) for lead in session.scalars(inserted))
        result.new.update(new)
    return {key: existing[key] for key in touched}


def _attributes_fit(row: _Row, stored: dict[str, Any] | None, result: _BatchResult) -> bool:
    """Whether the row's attributes, merged with those the lead has, stay within the
    limits; a row that would grow the lead past them is reported and skipped."""
    given = row.lead.provided().get(ATTRIBUTES_FIELD)
    if not given or not stored:
        return True  # a row's own attributes were checked when it was read
    try:
        merged_attributes(stored, given)
    except ValueError as exc:
        result.skipped += 1
        result.errors.append(RowError(row.number, ATTRIBUTES_FIELD, f"{exc}; row skipped"))
        return False
    return True


def _stage_allowed(
    row: _Row, key: str, stages: dict[str, str], result: _BatchResult, now: datetime
) -> bool:
    """Whether the row's lifecycle stage (if it gives a different one) is a move the state
    machine allows from where the lead is; a refused row is reported and skipped."""
    target = row.lead.provided().get(STAGE_FIELD)
    if target is None or target == stages[key]:
        return True
    refusal = refusal_of(stages[key], target, now)
    if refusal is not None:
        result.skipped += 1
        result.errors.append(RowError(row.number, STAGE_FIELD, f"{refusal.message}; row skipped"))
        return False
    result.moves.append((row.number, key, str(target)))
    stages[key] = str(target)
    return True


def _record_stages(
    session: Session,
    leads: dict[str, Lead],
    result: _BatchResult,
    funnel: Funnel,
    now: datetime,
) -> None:
    """New leads' first stage (reason ``import``, from none), then the moves of existing
    leads through the funnel, in file order (each recorded, its hand-offs and sequences
    settled as for any stage change)."""
    entries = [
        (leads[key], Reason(ReasonKind.import_, "created by a CSV import", {"source": "import"}))
        for key in leads
        if key in result.new
    ]
    record_entries(session, entries, ACTOR, now, funnel.rules)
    if not result.moves:
        return
    for number, key, target in result.moves:
        reason = Reason(ReasonKind.import_, f"CSV import, row {number}", {"source": "import"})
        change_stage(session, leads[key], target, reason, ACTOR, now, funnel=funnel)


def _update(lead: Lead, given: LeadIn, now: datetime) -> None:
    """Overwrite only what the row gives; attributes are merged. The stored email (and its
    case) stays: the row matched it case-insensitively. The stage moves in _record_stages."""
    for name, value in given.provided().items():
        if name == "attributes":
            lead.attributes = {**(lead.attributes or {}), **value}
        elif name not in ("email", STAGE_FIELD):
            setattr(lead, name, value)
    lead.updated_at = now


def _merge(values: dict[str, Any], given: LeadIn) -> None:
    """:func:`_update` for a lead not inserted yet."""
    for name, value in given.provided().items():
        if name == "attributes":
            values["attributes"] = {**values["attributes"], **value}
        elif name != "email":
            values[name] = value


def _count(report: ImportReport, result: _BatchResult) -> None:
    report.created += result.created
    report.updated += result.updated
    report.skipped += result.skipped
    report.errors.extend(result.errors)
    report.enrolled.update(result.enrolled)
    report.not_enrolled.update(result.not_enrolled)


def _batch_failed(report: ImportReport, batch: list[_Row], exc: SQLAlchemyError) -> None:
    first, last = batch[0].number, batch[-1].number
    log.error("rows %d-%d rolled back: %s", first, last, exc)
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    message = f"database error, rows {first}-{last} were not imported: {reason}"
    report.skipped += len(batch)
    report.database_errors += 1
    report.errors.append(RowError(first, "", message))
