"""``bastion code``: users' own code, pushed sealed to a cluster, checked there, reviewed.

``push`` packs a folder (a Python package with a ``pyproject.toml``, or a folder of modules),
checks the package rules here first, seals the archive to the cluster's public key and
follows the cluster's agent as it checks, seals and registers it as ``NAME@V``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bastion.cli.context import out, when
from bastion.cli.data_cmd import follow_job, parse_ref, pick_cluster
from bastion.cli.options import Follow
from bastion.cli.output import Output, OutputFormat, printed
from bastion.cli.remote import client
from bastion.client import CodeVersionOut

app = typer.Typer(help="Users' code packages (models and data transforms).", no_args_is_help=True)

Project = Annotated[
    str, typer.Option("--project", "-p", envvar="BASTION_PROJECT", help="Project of the code.")
]
Ref = Annotated[str, typer.Argument(help="Code version, NAME@VERSION (e.g. resnet@1).")]


def _print_version(version: CodeVersionOut, *, files: bool) -> None:
    out.print(
        f"[bold]{version.name}@{version.version}[/bold]  {version.status}  on cluster "
        f"{version.cluster}  pushed by {version.pushed_by} {when(version.created_at)}"
    )
    if version.status_reason and version.status != "registered":
        out.print(f"  {version.status_reason}", markup=False)
    if version.manifest_hash:
        out.print(f"  sealed manifest {version.manifest_hash} (signed by its cluster)")
    size = sum(f.size for f in version.files)
    out.print(f"  {len(version.files)} files, {size} bytes; archive {version.archive_sha256}")
    for review in version.reviews:
        comment = f": {review.comment}" if review.comment else ""
        out.print(f"  {review.verdict} by {review.reviewer} {when(review.created_at)}{comment}")
    if not version.reviews:
        out.print("  not reviewed")
    if files:
        table = Table("file", "bytes", "sha256")
        for entry in version.files:
            table.add_row(entry.path, str(entry.size), entry.sha256)
        out.print(table)


@app.command("push")
def push(
    folder: Annotated[Path, typer.Argument(help="The package's folder.")],
    project: Project,
    name: Annotated[str, typer.Option(help="The package's name in the project.")],
    cluster: Annotated[
        str | None, typer.Option("--cluster", "-c", help="The cluster that keeps and runs it.")
    ] = None,
    follow: Follow = True,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Pack, seal to the cluster and push a folder; its agent checks and registers it."""
    with client() as remote:
        target = pick_cluster(remote, cluster)
        pushed = remote.push_code(project, folder, name=name, cluster=target)
        out.print(
            f"pushed {pushed.name}@{pushed.version}: {len(pushed.files)} files sealed to cluster "
            f"{target} (the control plane keeps their hashes, not their text)"
        )
        if pushed.run_id is not None:
            follow_job(remote, project, remote.get_run(project, pushed.run_id), follow=follow)
        version = remote.code_version(project, pushed.name, pushed.version)
    if printed(version, output):
        return
    _print_version(version, files=False)


@app.command("list")
def list_code(project: Project, output: Output = OutputFormat.TABLE) -> None:
    """List a project's code packages and their latest version."""
    with client() as remote:
        packages = remote.list_code(project)
    if printed(packages, output):
        return
    table = Table("name", "versions", "latest", "status", "reviews", "pushed")
    for package in packages:
        latest = package.latest
        table.add_row(
            package.name,
            str(package.versions),
            f"{package.name}@{latest.version}" if latest else "",
            latest.status if latest else "",
            ", ".join(f"{r.verdict} by {r.reviewer}" for r in latest.reviews) if latest else "",
            when(latest.created_at) if latest else "",
        )
    out.print(table)


@app.command("show")
def show(ref: Ref, project: Project, output: Output = OutputFormat.TABLE) -> None:
    """Show a version: status, who pushed it, every file with its hash, reviews."""
    name, number = parse_ref(ref)
    with client() as remote:
        version = remote.code_version(project, name, number)
    if printed(version, output):
        return
    _print_version(version, files=True)


@app.command("review")
def review(
    ref: Ref,
    project: Project,
    reject: Annotated[bool, typer.Option("--reject", help="Reject instead of approving.")] = False,
    comment: Annotated[str, typer.Option("--comment", "-m", help="Why.")] = "",
) -> None:
    """(Reviewer) approve a registered version (or --reject it); not your own push."""
    name, number = parse_ref(ref)
    with client() as remote:
        version = remote.review_code(
            project, name, number, verdict="rejected" if reject else "approved", comment=comment
        )
    out.print(f"{'rejected' if reject else 'approved'} {name}@{number}")
    _print_version(version, files=False)


__all__ = ["app"]
