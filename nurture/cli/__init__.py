"""The ``nurture`` command: one sub-command per job a marketer or operator does by hand."""

from __future__ import annotations

import sys

import typer
from pydantic import ValidationError
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from nurture.cli import authoring, db, engine, leads, report, sales, scoring, web
from nurture.cli.output import SafeConsole
from nurture.settings import InsecureSettings

_console = SafeConsole(stderr=True, soft_wrap=True)
app = typer.Typer(
    name="nurture",
    help="Lead-nurture automation: drip sequences as code.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(db.app, name="db")
app.add_typer(leads.app, name="leads")
app.add_typer(scoring.app, name="lead")
app.add_typer(web.events_app, name="events")
app.add_typer(sales.app, name="sales")
app.add_typer(report.app, name="report")
leads.app.command("erase")(web.erase_command)
app.command()(engine.demo)
app.command()(engine.run)
app.command()(engine.tick)
app.command()(engine.outbox)
app.command()(web.web)
app.command()(authoring.validate)
app.command()(authoring.preview)


def main() -> None:
    """Run the CLI; configuration and database problems end with a message, not a traceback."""
    try:
        app()
    except ValidationError as exc:
        if exc.title != "Settings":
            raise
        for error in exc.errors():
            name = "NURTURE_" + "_".join(str(part) for part in error["loc"]).upper()
            message = str(error["msg"]).removeprefix("Value error, ")
            _console.print(f"configuration error: {name}: {message}", markup=False)
        sys.exit(2)
    except InsecureSettings as exc:
        _console.print(f"refusing to start: {exc}", markup=False)
        sys.exit(2)
    except OperationalError as exc:
        _console.print(f"database error: {_database_hint(exc)}", markup=False)
        sys.exit(1)
    except (ArgumentError, NoSuchModuleError) as exc:
        _console.print(f"configuration error: NURTURE_DATABASE_URL: {exc}", markup=False)
        sys.exit(2)


def _database_hint(exc: OperationalError) -> str:
    text = str(exc.orig) if exc.orig is not None else str(exc)
    if "no such table" in text or ("does not exist" in text and "relation" in text):
        return f"{text.splitlines()[0]}; is the database migrated? run: nurture db upgrade"
    return f"{text.splitlines()[0]} (check NURTURE_DATABASE_URL)"
