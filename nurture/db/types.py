"""Column types: timezone-aware datetimes everywhere (UTC in the database, aware in Python; a
naive datetime is refused), stored by SQLite as sortable text."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    DateTime,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect


def utcnow() -> datetime:
    return datetime.now(UTC)


class AwareDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes on every database (SQLite forgets the zone: we store UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: Nurture only stores aware datetimes")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    # SQLite: one function per value each way instead of this class's and the dialect's
    # (SQLAlchemy formats with a %-dict and parses with a regex): the hot paths store and
    # read several datetimes per row. The text is exactly what SQLAlchemy writes
    # ("2026-12-01 09:30:00.000000", UTC), so old and new rows compare alike.
    def bind_processor(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return sqlite_utc_text
        return super().bind_processor(dialect)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        if dialect.name == "sqlite":
            return sqlite_utc_datetime
        return super().result_processor(dialect, coltype)


def sqlite_utc_text(value: datetime | None) -> str | None:
    """How a datetime is stored on SQLite: UTC, microseconds, no zone."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: Nurture only stores aware datetimes")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def sqlite_utc_datetime(value: str | datetime | None) -> datetime | None:
    """A datetime stored on SQLite, read back aware (UTC)."""
    if value is None:
        return None
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
