"""``bastion policy``: a project's promotion policies (YAML gates)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bastion import safe_yaml
from bastion.cli.context import out, when
from bastion.cli.output import Output, OutputFormat, printed
from bastion.cli.remote import client
from bastion.errors import InvalidInput

app = typer.Typer(
    help="Promotion policies: the gates a model version must pass.", no_args_is_help=True
)

Project = Annotated[
    str, typer.Option("--project", "-p", envvar="BASTION_PROJECT", help="Project of the policy.")
]


@app.command()
def put(
    name: Annotated[str, typer.Argument(help="Policy name (promotion to X uses policy X).")],
    project: Project,
    file: Annotated[Path, typer.Option("--file", "-f", help="YAML file of gates.")],
) -> None:
    """Save a policy from YAML; unknown gates and empty policies are refused."""
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"{file}: no such file") from None
    document = safe_yaml.load(text, source=str(file), error=InvalidInput)
    if not isinstance(document, dict):
        raise InvalidInput(f"{file}: a policy is a mapping of gate names to values")
    with client() as remote:
        saved = remote.put_policy(project, name, document)
    out.print(f"policy {name} saved: {', '.join(sorted(saved.document))}", markup=False)


@app.command("list")
def list_policies(project: Project, output: Output = OutputFormat.TABLE) -> None:
    """List the project's policies and their gates."""
    with client() as remote:
        rows = remote.list_policies(project)
    if printed(rows, output):
        return
    table = Table("policy", "gates", "updated")
    for row in rows:
        gates = ", ".join(f"{k}={v}" for k, v in sorted(row.document.items()))
        table.add_row(row.name, gates, when(row.updated_at))
    out.print(table)
