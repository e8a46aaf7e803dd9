"""Output shared by the commands: read by people, piped into scripts.

Every command prints through :class:`SafeConsole`, :func:`echo` or :func:`echo_json`:
lead data comes from CSV files, APIs and CRMs, and a terminal acts on the escapes it
holds (a window title, a hyperlink, a cleared screen), so none of it reaches the terminal."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any

import typer
from rich.console import Console
from rich.errors import MarkupError
from rich.markup import escape as rich_escape
from rich.style import Style
from rich.table import Table
from rich.text import Span, Text

# Piped output is read by grep, cut and spreadsheets: a row must stay on one line. Tables
# take only the width their content needs, so a wide limit costs nothing.
PIPED_WIDTH = 4000

# What a terminal acts on: CSI sequences (ESC [ or the 8-bit CSI) whole; OSC, DCS, SOS,
# PM and APC strings whole when they end on the line (BEL or ST), else their introducer;
# the other ESC forms; any other C0 control but tab and newline, DEL and C1 (ECMA-48).
_UNSAFE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[]PX^_]|[\x90\x98\x9d-\x9f])(?:[^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c))?"
    r"|\x1b[ -/]*[0-~]?"
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)
# What json.dumps(ensure_ascii=False) leaves raw of those (it escapes C0 itself).
_RAW_IN_JSON = re.compile(r"[\x7f-\x9f]")


def clean(text: str) -> str:
    """``text`` without escape sequences and control characters (tab and newline stay)."""
    return _UNSAFE.sub("", text)


def escape(text: str) -> str:
    """Lead data for a markup string: cleaned, then escaped for rich markup (in this order,
    so removing a control character can never unescape or make a tag)."""
    return rich_escape(clean(text))


def clean_text(text: Text) -> Text:
    """A rendered (styled) text without what :func:`clean` removes; styles stay put."""
    cuts = [offset for found in _UNSAFE.finditer(text.plain) for offset in found.span()]
    if not cuts:
        return text
    # Pieces between the offsets alternate: kept, cut, kept, ..., kept.
    return text.blank_copy().join(text.divide(cuts)[0::2])


class SafeConsole(Console):
    """A rich Console that writes no control character it was given. Every string it
    renders (printed text, table cells, titles) is cleaned once markup is parsed, before
    layout: rich's own styling stays, the data's escapes go, columns still line up.

    Table cells are markup too, and hold lead data: text that is not valid markup is shown
    as it is (rather than failing the command), and no markup makes a terminal hyperlink
    (OSC 8); the commands print none of their own."""

    def render_str(self, text: str, **options: Any) -> Text:
        try:
            rendered = super().render_str(text, **options)
        except MarkupError:
            rendered = super().render_str(text, **{**options, "markup": False})
        rendered.spans = [
            Span(span.start, span.end, self._unlinked(span.style)) for span in rendered.spans
        ]
        return clean_text(rendered)

    def _unlinked(self, style: str | Style) -> str | Style:
        parsed = self.get_style(style, default=Style.null()) if isinstance(style, str) else style
        return parsed.clear_meta_and_links() if parsed.link else style


def echo(text: str, err: bool = False) -> None:
    """A plain line (typer.echo), cleaned."""
    typer.echo(clean(text), err=err)


def echo_json(data: Any, **options: Any) -> None:
    """``json.dumps(data, **options)`` printed, with DEL and C1 escaped as \\uXXXX (JSON
    escapes the other controls itself, but not those): the same JSON, nothing a terminal
    acts on, also with ``ensure_ascii=False``."""
    text = json.dumps(data, **options)
    typer.echo(_RAW_IN_JSON.sub(lambda found: f"\\u{ord(found.group()):04x}", text))


def table_console(stderr: bool = False) -> Console:
    """A console for tables: the terminal's width on a terminal; never wraps when piped."""
    console = SafeConsole(stderr=stderr)
    if console.is_terminal:
        return console
    return SafeConsole(stderr=stderr, width=PIPED_WIDTH, soft_wrap=True)


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
