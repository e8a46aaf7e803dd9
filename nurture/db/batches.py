"""Statements about many rows at once: ids in chunks, ``column IN (...)`` whose cost
does not grow with the number of values on PostgreSQL, and a batch of rows passed to the
database as one JSON parameter (to join against)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ARRAY, JSON, ColumnElement, Text, any_, bindparam, cast, column, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import FromClause
from sqlalchemy.types import TypeEngine

# Values per statement: well below SQLite's and PostgreSQL's limits on bound parameters.
CHUNK = 2000

T = TypeVar("T")


def chunks(values: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """``values`` in slices of at most ``size``."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def one_of(
    session: Session,
    column: ColumnElement[Any] | Any,
    values: Iterable[Any],
    item_type: TypeEngine[Any] | None = None,
) -> ColumnElement[bool]:
    """``column IN (values)``. On PostgreSQL ``column = ANY(:values)``: one array parameter,
    where an IN list is one parameter per value that the driver parses into the statement
    and the server plans afresh for every length (milliseconds for a thousand values)."""
    values = list(values)
    if session.get_bind().dialect.name != "postgresql":
        return column.in_(values)
    array = ARRAY(item_type if item_type is not None else column.type)
    return column == any_(bindparam(None, values, type_=array))


def json_rows(
    session: Session,
    columns: Sequence[tuple[str, TypeEngine[Any]]],
    rows: Iterable[Sequence[Any]],
) -> FromClause:
    """``rows`` (tuples in the order of ``columns``) as a table to join against, passed as
    one JSON parameter: the statement's text is the same whatever the number of rows (so
    it is compiled, parsed and planned once), and the values are encoded in C instead of
    being bound one by one. PostgreSQL reads it with ``json_to_recordset``; SQLite with
    ``json_each``, the values in its storage form (datetimes as SQLAlchemy writes them,
    so comparing them with stored ones compares like with like)."""
    dialect = session.get_bind().dialect
    encoders = [type_.dialect_impl(dialect).bind_processor(dialect) for _, type_ in columns]
    encoded = [
        [
            value if encode is None else encode(value)
            for encode, value in zip(encoders, row, strict=True)
        ]
        for row in rows
    ]
    if dialect.name == "postgresql":
        names = [name for name, _ in columns]
        document = json.dumps(
            [dict(zip(names, row, strict=True)) for row in encoded], default=json_value
        )
        records = func.json_to_recordset(cast(bindparam(None, document, type_=Text()), JSON()))
        typed = (column(name, type_) for name, type_ in columns)
        return records.table_valued(*typed).render_derived(with_types=True)
    each = func.json_each(bindparam(None, json.dumps(encoded), type_=Text())).table_valued("value")
    fields = [
        func.json_extract(each.c.value, f"$[{i}]", type_=type_).label(name)
        for i, (name, type_) in enumerate(columns)
    ]
    return select(*fields).select_from(each).subquery()


def json_value(value: Any) -> Any:
    """``json.dumps``'s ``default`` for rows sent as JSON: aware datetimes as ISO 8601 with
    their offset (what PostgreSQL's timestamptz reads), naive ones refused as the
    AwareDateTime columns refuse them."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: Nurture only stores aware datetimes")
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
