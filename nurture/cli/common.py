"""What the commands that open the database share: the check that it is there and migrated."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import typer
from sqlalchemy import Engine, inspect
from sqlalchemy.exc import SQLAlchemyError


def database_problem(
    engine: Engine, required: Iterable[str], describe: Callable[[Exception], str] = str
) -> str | None:
    """Why ``engine``'s database cannot serve (unreachable, tables missing), or None."""
    where = engine.url.render_as_string(hide_password=True)
    try:
        tables = set(inspect(engine).get_table_names())
    except SQLAlchemyError as exc:
        return f"cannot reach the database at {where}: {describe(exc)}"
    missing = [t for t in required if t not in tables]
    if missing:
        return f"the database at {where} lacks {', '.join(missing)}: run `nurture db upgrade`"
    return None


def parse_instant(text: str | None, option: str = "--now") -> datetime:
    """An ``--now``-style option: an ISO time with its zone (``2026-03-02T09:00+09:00``),
    in UTC; the current time when not given. A bad or zone-less time is a usage error."""
    if text is None:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"not an ISO time: {text!r}", param_hint=option) from exc
    if at.tzinfo is None:
        raise typer.BadParameter("give a time zone, e.g. 2026-03-02T09:00+09:00", param_hint=option)
    return at.astimezone(UTC)
