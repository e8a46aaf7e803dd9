"""What the commands that open the database share: the check that it is there and migrated."""

from __future__ import annotations

from collections.abc import Callable, Iterable

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
