"""The ``nurture`` command: one sub-command per job a marketer or operator does by hand."""

from __future__ import annotations

import typer

from nurture.cli import authoring, db, engine, leads, report, sales, scoring, web

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
    app()
