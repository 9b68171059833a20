"""``bastion project`` and ``bastion member``: projects and who holds which role in them."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from bastion.cli.context import default_project_file, out, settings, when
from bastion.cli.output import Output, OutputFormat, printed
from bastion.cli.remote import client
from bastion.errors import InvalidInput, NotFound
from bastion.files import atomic_write_bytes

projects = typer.Typer(help="Manage projects.", no_args_is_help=True)
members = typer.Typer(
    help="Manage project memberships (one role per project).", no_args_is_help=True
)

ROLES = "admin, data-steward, ml-engineer, reviewer or auditor (serving, for a serving identity)"


@projects.command()
def create(
    name: Annotated[str, typer.Argument(help="Lower-case project name.")],
    description: Annotated[str, typer.Option(help="What the project is for.")] = "",
) -> None:
    """Create a project (administrators only)."""
    with client() as remote:
        project = remote.create_project(name, description=description)
    out.print(f"created project {project.name}")


@projects.command("use")
def use(
    name: Annotated[str | None, typer.Argument(help="Project to use by default.")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Forget the default project.")] = False,
) -> None:
    """Name the project commands use when -p is not given (BASTION_PROJECT overrides it)."""
    path = default_project_file(settings())
    if clear:
        path.unlink(missing_ok=True)
        out.print("no default project; give -p or set BASTION_PROJECT")
        return
    if name is None:
        raise InvalidInput("name a project, or give --clear")
    with client() as remote:
        known = {project.name for project in remote.list_projects()}
    if name not in known:
        raise NotFound(f"project {name!r} does not exist or you are not a member of it")
    atomic_write_bytes(path, name.encode(), mode=0o600)
    out.print(f"commands use project {name} when -p is not given (BASTION_PROJECT overrides)")


@projects.command("list")
def list_projects(output: Output = OutputFormat.TABLE) -> None:
    """List the projects you belong to (all of them for administrators)."""
    with client() as remote:
        rows = remote.list_projects()
    if printed(rows, output):
        return
    table = Table("name", "description", "created")
    for row in rows:
        table.add_row(row.name, row.description, when(row.created_at))
    out.print(table)


@members.command("add")
def add(
    project: Annotated[str, typer.Argument(help="Project name.")],
    username: Annotated[str, typer.Argument(help="User to add or change.")],
    role: Annotated[str, typer.Option(help=f"One of {ROLES}.")],
) -> None:
    """Give a user a role in a project (replaces any role they had there)."""
    with client() as remote:
        remote.set_member(project, username, role)
    out.print(f"{username} is {role} in {project}")


@members.command("list")
def list_members(
    project: Annotated[str, typer.Argument(help="Project name.")],
    output: Output = OutputFormat.TABLE,
) -> None:
    """List a project's members and roles."""
    with client() as remote:
        rows = remote.list_members(project)
    if printed(rows, output):
        return
    table = Table("username", "role", "since")
    for row in rows:
        table.add_row(row.username, row.role, when(row.created_at))
    out.print(table)


@members.command("remove")
def remove(
    project: Annotated[str, typer.Argument(help="Project name.")],
    username: Annotated[str, typer.Argument(help="User to remove.")],
) -> None:
    """Remove a user from a project."""
    with client() as remote:
        remote.remove_member(project, username)
    out.print(f"removed {username} from {project}")
