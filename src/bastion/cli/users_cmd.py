"""``bastion user``: people and machine identities."""

from __future__ import annotations

from typing import Annotated, Literal

import typer
from rich.table import Table

from bastion.cli.context import out, when
from bastion.cli.output import Output, OutputFormat, printed
from bastion.cli.remote import client

app = typer.Typer(help="Manage users and machine identities.", no_args_is_help=True)

Kind = Literal["human", "agent", "job", "serving"]


@app.command()
def create(
    username: Annotated[str, typer.Argument(help="Lower-case name.")],
    kind: Annotated[str, typer.Option(help="human, agent, job or serving.")] = "human",
    admin: Annotated[bool, typer.Option("--admin", help="Make an administrator.")] = False,
    password: Annotated[
        bool, typer.Option("--password", help="Set a dashboard password (prompted).")
    ] = False,
) -> None:
    """Create a user (administrators only)."""
    secret = (
        typer.prompt("password", hide_input=True, confirmation_prompt=True) if password else None
    )
    with client() as remote:
        user = remote.create_user(username, kind=kind, is_admin=admin, password=secret)
    out.print(f"created {user.kind} user {user.username}")


@app.command("list")
def list_users(output: Output = OutputFormat.TABLE) -> None:
    """List users."""
    with client() as remote:
        users = remote.list_users()
    if printed(users, output):
        return
    table = Table("username", "kind", "admin", "disabled", "created")
    for user in users:
        table.add_row(
            user.username,
            user.kind,
            "yes" if user.is_admin else "",
            "yes" if user.disabled else "",
            when(user.created_at),
        )
    out.print(table)


@app.command()
def disable(username: Annotated[str, typer.Argument(help="User to disable.")]) -> None:
    """Disable a user; their tokens stop working at once."""
    with client() as remote:
        remote.disable_user(username)
    out.print(f"disabled {username}")


@app.command()
def password(username: Annotated[str, typer.Argument(help="Person to set it for.")]) -> None:
    """Set a person's dashboard password (prompted twice, never echoed; administrators only)."""
    secret = typer.prompt("new password", hide_input=True, confirmation_prompt=True)
    with client() as remote:
        remote.set_password(username, secret)
    out.print(f"set the dashboard password of {username}")
