"""``bastion privacy``: data subjects' rights (GDPR Art. 17 erasure)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from bastion.cli.context import out, when
from bastion.cli.options import Follow
from bastion.cli.output import Output, OutputFormat, printed
from bastion.cli.remote import client
from bastion.cli.runs_cmd import follow_run
from bastion.client import Client, ErasureOut
from bastion.errors import CheckFailed

app = typer.Typer(help="Data subjects' rights: erasure (GDPR Art. 17).", no_args_is_help=True)

Project = Annotated[
    str, typer.Option("--project", "-p", envvar="BASTION_PROJECT", help="Project holding the data.")
]


def _show(found: ErasureOut) -> None:
    locate = found.mode == "locate"
    columns = ("dataset version", "rows") if locate else ("dataset version", "rows removed")
    table = Table(*columns, "new version", "old version's keys")
    for ref, result in sorted(found.results.items()):
        shredded = result.get("shredded")
        table.add_row(
            ref,
            str(result.get("rows", "")),
            str(result.get("new_version", "")),
            "" if shredded is None else "shredded" if shredded else "kept (retention hold)",
        )
    out.print(table)
    out.print(
        f"{'search' if locate else 'erasure'} {found.id} ({found.subject}): "
        f"{found.status}, {found.rows_removed} row(s) {'found' if locate else 'removed'}",
        markup=False,
    )
    for ref, made in sorted(found.downstream.items()):
        models = [node for node in made if node.startswith("model:")]
        out.print(
            f"  {ref} -> {len(made) - len(models)} run(s) -> "
            f"{', '.join(m[6:] for m in models) or 'no model'}",
            markup=False,
        )
    if found.models_flagged:
        out.print(
            f"trained on erased data (retrain recommended): {', '.join(found.models_flagged)}",
            markup=False,
        )


def _follow(remote: Client, project: str, made: ErasureOut, *, done: str) -> None:
    """Follow every run of the request, show what it did; exit 1 unless it reached ``done``."""
    for run_id in made.runs:
        follow_run(remote, project, run_id)
    found = remote.erasure(project, made.id)
    _show(found)
    if found.status == "no data found":
        raise CheckFailed(f"no dataset version in project {project!r} holds that subject")
    if found.status != done:
        what = "search" if found.mode == "locate" else "erasure"
        raise CheckFailed(f"{what} {found.id} {found.status}")


@app.command()
def erase(
    project: Project,
    subject_id: Annotated[str, typer.Option("--subject-id", help="The subject's id in the data.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit log).")],
    follow: Follow = True,
) -> None:
    """Remove a data subject from every dataset version; exit 1 if none held them."""
    with client() as remote:
        made = remote.request_erasure(project, subject_id=subject_id, reason=reason)
        out.print(
            f"erasure {made.id}: {len(made.runs)} dataset version(s) to search; the "
            f"subject is kept only as {made.subject}",
            markup=False,
        )
        if not follow:
            return
        _follow(remote, project, made, done="completed")


@app.command()
def find(
    project: Project,
    subject_id: Annotated[str, typer.Option("--subject-id", help="The subject's id in the data.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit log).")] = "access request",
) -> None:
    """Where a data subject is: the dataset versions holding them, and the runs and models
    made from those (subject-level lineage). Changes nothing; exit 1 if none holds them."""
    with client() as remote:
        made = remote.request_erasure(project, subject_id=subject_id, reason=reason, locate=True)
        _follow(remote, project, made, done="found")


@app.command()
def show(
    erasure_id: Annotated[str, typer.Argument(help="Erasure request id.")],
    project: Project,
    output: Output = OutputFormat.TABLE,
) -> None:
    """An erasure request's status and what it did to each dataset version."""
    with client() as remote:
        found = remote.erasure(project, erasure_id)
    if not printed(found, output):
        _show(found)


@app.command("list")
def list_requests(project: Project, output: Output = OutputFormat.TABLE) -> None:
    """Every erasure and locate request of the project, newest first: the register a data
    protection officer keeps (the subject appears only as its keyed pseudonym)."""
    with client() as remote:
        found = remote.erasures(project)
    if printed(found, output):
        return
    table = Table("request", "kind", "subject", "status", "rows", "asked by", "when", "reason")
    for request in found:
        table.add_row(
            request.id,
            request.mode,
            request.subject,
            request.status,
            str(request.rows_removed),
            request.requested_by,
            when(request.created_at),
            request.reason,
        )
    out.print(table)
    out.print(f"{len(found)} request(s)", markup=False)
