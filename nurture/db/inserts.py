"""Inserting a batch of rows in one statement, skipping those a unique constraint refuses
(already stored, or stored by a concurrent request), with the id of each row inserted."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import JSON, Connection, Table, Text, bindparam, cast, column, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from nurture.db.batches import json_value
from nurture.db.models import Base


def _insert(session: Session | Connection, table: Any) -> Any:
    """INSERT with ON CONFLICT support, in the session's dialect."""
    if _dialect(session) == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def insert_ignoring_conflicts(
    session: Session | Connection, table: Any, rows: Sequence[dict[str, Any]], *, conflict: str
) -> dict[Any, int]:
    """Insert ``rows`` in one statement, skipping any that would break a unique constraint
    (already stored, or just stored by a concurrent request); returns the id of each row
    inserted, by its value of the ``conflict`` column."""
    if not rows:
        return {}
    if isinstance(table, type) and issubclass(table, Base):
        table = table.__table__
    column = table.c[conflict]
    if len(rows) > 1 and _dialect(session) == "postgresql":
        statement = _json_insert(table, rows)
        result = session.execute(statement.returning(table.c.id, column))
    else:
        statement = _insert(session, table).on_conflict_do_nothing()
        result = session.execute(statement.returning(table.c.id, column), list(rows))
    return {value: int(row_id) for row_id, value in result}


def _json_insert(table: Table, rows: Sequence[dict[str, Any]]) -> Any:
    """``INSERT ... SELECT * FROM json_to_recordset(:rows) ... ON CONFLICT DO NOTHING`` on
    PostgreSQL: the rows travel as one JSON text (encoded in C by the json module, parsed
    in C by the server), and the statement's text is the same whatever the batch size, so
    psycopg parses it and the server plans it once. A multi-row VALUES is rows x columns
    parameters that psycopg parses in Python for every batch; arrays per column
    (``unnest``) are dumped value by value in Python."""
    names = list(rows[0])
    document = json.dumps(rows, default=json_value, ensure_ascii=False)
    records = (
        func.json_to_recordset(cast(bindparam("rows", document, type_=Text()), JSON()))
        .table_valued(*(column(name, table.c[name].type) for name in names))
        .render_derived(with_types=True)
    )
    source = select(*(records.c[name] for name in names))
    return postgresql.insert(table).from_select(names, source).on_conflict_do_nothing()


def _dialect(session: Session | Connection) -> str:
    bind = session if isinstance(session, Connection) else session.get_bind()
    return bind.dialect.name
