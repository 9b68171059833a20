"""``bastion alerts``: insider-threat signals (admins and auditors)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from bastion.cli.context import out, when
from bastion.cli.options import comment_or
from bastion.cli.output import Output, OutputFormat, printed
from bastion.cli.remote import client

app = typer.Typer(
    help="Insider-threat alerts: self-approval, access outside one's projects, repeated "
    "denials, unusual export volume.",
    no_args_is_help=True,
)


@app.command("list")
def list_alerts(
    include_acknowledged: Annotated[
        bool, typer.Option("--all", help="Include acknowledged alerts.")
    ] = False,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Open alerts, newest first."""
    with client() as remote:
        rows = remote.list_alerts(include_acknowledged=include_acknowledged)
    if printed(rows, output):
        return
    table = Table("id", "when", "kind", "who", "project", "details", "acknowledged")
    for row in rows:
        table.add_row(
            row.id,
            when(row.created_at),
            row.kind,
            escape(row.actor),
            row.project or "",
            escape(json.dumps(row.details, sort_keys=True)[:120]),
            escape(row.acknowledged_by or ""),
        )
    out.print(table)
    if not rows:
        out.print("no open alerts")


@app.command("ack")
def acknowledge(
    alert_id: Annotated[str, typer.Argument(help="Alert id, as listed.")],
    comment: Annotated[
        str, typer.Option("--comment", "-m", help="What was found (kept in the audit log).")
    ] = "",
    note: Annotated[str, typer.Option("--note", hidden=True)] = "",
) -> None:
    """Mark an alert as looked into."""
    with client() as remote:
        done = remote.acknowledge_alert(alert_id, comment_or(comment, note))
    out.print(f"alert {done.id} acknowledged by {done.acknowledged_by}", markup=False)
