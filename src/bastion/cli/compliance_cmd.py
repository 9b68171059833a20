"""``bastion compliance``: HIPAA and GDPR reports built from the evidence Bastion holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from bastion.cli.context import out
from bastion.cli.remote import client
from bastion.files import atomic_write_bytes

app = typer.Typer(help="Compliance reports (admins and auditors).", no_args_is_help=True)


@app.command()
def report(
    framework: Annotated[str, typer.Option(help="hipaa or gdpr.")] = "hipaa",
    fmt: Annotated[str, typer.Option("--format", help="md, html or json.")] = "md",
    output: Annotated[
        Path | None, typer.Option("--out", help="Write the report to this file.")
    ] = None,
) -> None:
    """Control by control: pass, fail or manual, the evidence, and what to fix."""
    with client() as remote:
        text = remote.compliance_report(framework, fmt)
        summary = json.loads(remote.compliance_report(framework, "json"))
    if output is not None:
        atomic_write_bytes(output, text.encode())
    print_controls(summary)
    if output is not None:
        out.print(f"{fmt} report written to {output}", markup=False)
    elif fmt != "json":
        out.print(text, markup=False)


def print_controls(summary: dict[str, Any]) -> None:
    """A report's controls with their status, and the tally."""
    table = Table("control", "status", title=summary["title"])
    colours = {"pass": "green", "fail": "red", "manual": "yellow"}
    for control in summary["controls"]:
        table.add_row(
            f"{control['id']} {control['title']}",
            f"[{colours[control['status']]}]{control['status']}[/]",
        )
    out.print(table)
    tally = summary["summary"]
    out.print(f"{tally['pass']} pass, {tally['fail']} fail, {tally['manual']} manual")
