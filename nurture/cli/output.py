"""Output shared by the commands that print tables: read by people, piped into scripts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, tzinfo

from rich.console import Console
from rich.table import Table

# Piped output is read by grep, cut and spreadsheets: a row must stay on one line. Tables
# take only the width their content needs, so a wide limit costs nothing.
PIPED_WIDTH = 4000


def table_console(stderr: bool = False) -> Console:
    """A console for tables: the terminal's width on a terminal; never wraps when piped."""
    console = Console(stderr=stderr)
    if console.is_terminal:
        return console
    return Console(stderr=stderr, width=PIPED_WIDTH, soft_wrap=True)


def show_time(value: datetime | str | None, zone: tzinfo = UTC) -> str:
    """``2026-03-02 09:00 UTC``: a stored time (or its ISO text) in ``zone``, to the minute."""
    if value is None or value == "":
        return ""
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    if at.tzinfo is None:  # stored times are UTC; never guess the machine's zone
        at = at.replace(tzinfo=UTC)
    return f"{at.astimezone(zone):%Y-%m-%d %H:%M %Z}"


def print_errors(console: Console, heading: str, errors: Sequence[str], shown: int) -> None:
    """A heading, the first ``shown`` errors one a line, and how many more ``--json`` has."""
    console.print(heading)
    for error in errors[:shown]:
        console.print(f"  {error}", markup=False, highlight=False, soft_wrap=True)
    if len(errors) > shown:
        console.print(f"  ... and {len(errors) - shown} more (see --json)")


def count_table(title: str, caption: str, counts: Iterable[tuple[str, int]]) -> Table:
    """A two-column table of (what, how many), as an import summary prints it."""
    table = Table(title=title, caption=caption)
    table.add_column("")
    table.add_column("rows", justify="right")
    for label, count in counts:
        table.add_row(label, str(count))
    return table
