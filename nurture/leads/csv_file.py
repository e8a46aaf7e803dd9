"""Reading a leads CSV: its header (which columns are lead fields, which become attributes),
and each row as the input of a lead, with problems named by row and column."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from nurture.leads.rows import ImportAborted, RowError
from nurture.leads.schema import LeadIn

# Every LeadIn field can be a column; other columns become attributes.
LEAD_COLUMNS = frozenset(name for name in LeadIn.model_fields if name != "attributes")


@dataclass(frozen=True)
class Column:
    name: str  # a LeadIn field, or an attribute name
    is_field: bool


def check_file(path: Path) -> None:
    """Raise ImportAborted if the file cannot be imported at all (unreadable, no header,
    no ``email`` column), so a caller can refuse it before writing anything."""
    with open_csv(path) as stream:
        read_header(path, csv.reader(stream))


def open_csv(path: Path) -> TextIO:
    # utf-8-sig drops Excel's byte-order mark; bytes that are not UTF-8 survive as
    # surrogates, so the row that holds them is reported instead of the whole file failing.
    try:
        return path.open(newline="", encoding="utf-8-sig", errors="surrogateescape")
    except OSError as exc:
        raise ImportAborted(f"cannot read {path}: {exc.strerror or exc}") from None


def read_header(path: Path, reader: Iterator[list[str]]) -> list[Column]:
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise ImportAborted(f"{path}: row 1 (the header) is not valid CSV: {exc}") from None
    if not header or not any(cell.strip() for cell in header):
        raise ImportAborted(f"{path} is empty: expected a header row with an 'email' column")
    if any("\udc80" <= ch <= "\udcff" for ch in "".join(header)):
        raise ImportAborted(f"{path}: the header (row 1) is not UTF-8; save the file as UTF-8")
    columns = [_column(cell) for cell in header]
    names = [c.name for c in columns if c.name]
    if "email" not in names:
        found = ", ".join(repr(n) for n in names[:20]) or "none"
        raise ImportAborted(f"{path}: the header (row 1) has no 'email' column; found {found}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ImportAborted(f"{path}: the header (row 1) names {', '.join(repeated)} twice")
    return columns


def _column(cell: str) -> Column:
    """``First Name`` and ``first-name`` name the first_name field; others are attributes."""
    name = cell.strip()
    as_field = name.lower().replace(" ", "_").replace("-", "_")
    return Column(as_field, True) if as_field in LEAD_COLUMNS else Column(name, False)


def row_data(
    number: int, values: list[str], columns: list[Column]
) -> tuple[dict[str, Any], list[RowError]]:
    """The row as LeadIn input: empty values dropped, extra columns as attributes."""
    extra = [v for v in values[len(columns) :] if v.strip()]
    if extra:
        message = f"{len(values)} values but the header has {len(columns)} columns"
        return {}, [RowError(number, "", message)]
    data: dict[str, Any] = {}
    attributes: dict[str, str] = {}
    problems = []
    for position, (column, value) in enumerate(zip(columns, values, strict=False), start=1):
        if not value.strip():
            continue
        if not column.name:
            problems.append(RowError(number, f"column {position}", "has a value but no header"))
        elif column.is_field:
            data[column.name] = value
        else:
            attributes[column.name] = value.strip()
    if attributes:
        data["attributes"] = attributes
    return data, problems
