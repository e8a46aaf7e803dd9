"""Output shared by the commands that print tables: read by people, piped into scripts."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo

from rich.console import Console

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
