"""``nurture db``: migrations."""

from __future__ import annotations

import typer

from nurture.cli.output import SafeConsole
from nurture.db import migrate
from nurture.settings import load_settings

app = typer.Typer(help="Database migrations (Alembic).", no_args_is_help=True)
console = SafeConsole()


@app.command()
def upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Migrate the database to the latest schema (creates a new SQLite file if needed)."""
    settings = load_settings()
    migrate.upgrade(settings.database_url, revision)
    revision_now = migrate.current_revision(settings.database_url)
    console.print(f"database at revision [bold]{revision_now}[/]")


@app.command()
def downgrade(revision: str = typer.Argument(..., help="Target revision, e.g. base.")) -> None:
    """Step the schema back (for development)."""
    settings = load_settings()
    migrate.downgrade(settings.database_url, revision)
    console.print(f"database at revision {migrate.current_revision(settings.database_url)}")


@app.command()
def current() -> None:
    """Print the database's schema revision."""
    console.print(migrate.current_revision(load_settings().database_url) or "empty database")
