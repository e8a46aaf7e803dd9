"""Statements about many rows at once: ids in chunks, and ``column IN (...)`` whose cost
does not grow with the number of values on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import ARRAY, ColumnElement, any_, bindparam
from sqlalchemy.orm import Session
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
