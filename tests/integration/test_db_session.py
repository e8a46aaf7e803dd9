"""The SQLite connection set-up: WAL, foreign keys, and power() for score ceilings even
where SQLite was built without its math functions."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import text

from nurture.db.session import _sqlite_pragmas, make_engine


class _NoMathCursor:
    """A cursor of an SQLite built without math functions."""

    def __init__(self, real: sqlite3.Cursor) -> None:
        self.real = real

    def execute(self, sql: str, *args: Any) -> Any:
        if "power(" in sql:
            raise sqlite3.OperationalError("no such function: power")
        return self.real.execute(sql, *args)

    def close(self) -> None:
        self.real.close()


class _NoMathConnection:
    def __init__(self, real: sqlite3.Connection) -> None:
        self.real = real
        self.isolation_level: str | None = ""
        self.functions: dict[str, Any] = {}

    def cursor(self) -> _NoMathCursor:
        return _NoMathCursor(self.real.cursor())

    def create_function(self, name: str, arity: int, function: Any, **kwargs: Any) -> None:
        self.functions[name] = function


def test_power_is_registered_when_sqlite_lacks_it(tmp_path: Path) -> None:
    conn = _NoMathConnection(sqlite3.connect(tmp_path / "x.db"))
    _sqlite_pragmas(conn, None)
    assert conn.functions["power"](0.5, 2) == 0.25


def test_connections_are_in_wal_with_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'y.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("SELECT power(2, 10)")).scalar() == 1024
    engine.dispose()
