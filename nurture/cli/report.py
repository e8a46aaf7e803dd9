"""``nurture report``: reports on the funnel (``sla``: hand-offs open, met and breached)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from nurture.cli.output import echo_json, show_time, table_console
from nurture.cli.sales import database
from nurture.funnel.sla import SlaReport, sla_report
from nurture.settings import load_settings

app = typer.Typer(help="Reports on the funnel.", no_args_is_help=True)
STATUSES = ("open", "met", "breached")


@app.command()
def sla(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    status: Annotated[
        str | None, typer.Option(help="Only hand-offs with this status: open, met, breached.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Hand-offs to list.")] = 200,
) -> None:
    """Hand-offs to sales with their SLA: open, met (acted on in time) and breached."""
    if status is not None and status not in STATUSES:
        raise typer.BadParameter(f"one of {', '.join(STATUSES)}", param_hint="--status")
    settings = load_settings()
    now = datetime.now(UTC)
    with database(settings) as sessions, sessions() as session:
        report = sla_report(session, now, status, limit)
    if as_json:
        echo_json(report.to_json(), indent=2, ensure_ascii=False)
    else:
        _print(report)


def _print(report: SlaReport) -> None:
    totals = report.to_json()["totals"]
    console = table_console()
    console.print(
        f"SLA at {show_time(report.at)}: {totals['open']} open, {totals['met']} met, "
        f"{totals['breached']} breached"
    )
    table = Table(title="Hand-offs")
    for column in ("id", "lead", "stage", "kind", "owner", "opened", "due", "closed", "status"):
        table.add_column(column, overflow="fold")
    for row in report.rows:
        table.add_row(
            str(row["id"]),
            row["lead"],
            row["stage"],
            f"{row['kind']}{' (hot)' if row['priority'] == 'hot' else ''}",
            row["owner"],
            show_time(row["opened_at"]),
            show_time(row["due_at"]),
            f"{show_time(row['closed_at'])} {row['outcome']}".strip(),
            row["status"],
        )
    console.print(table)
