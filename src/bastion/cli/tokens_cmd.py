"""``bastion token``: API tokens (shown once, stored hashed)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Column, Table

from bastion.cli.context import out, when
from bastion.cli.output import Output, OutputFormat, printed
from bastion.cli.remote import client

app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="What the token is for.")],
    scope: Annotated[
        list[str] | None,
        typer.Option(help="Permission to grant (repeatable); default all of yours."),
    ] = None,
    expires_days: Annotated[int, typer.Option(min=1, max=3650, help="Lifetime in days.")] = 90,
    user: Annotated[
        str | None, typer.Option(help="Mint for this (machine) user; administrators only.")
    ] = None,
) -> None:
    """Create a token and print it once."""
    with client() as remote:
        token = remote.create_token(name, scopes=scope, expires_in_days=expires_days, username=user)
    out.print(f"token {token.id} for {token.username} (shown once, store it now):")
    out.print(token.token, markup=False)


@app.command("list")
def list_tokens(
    user: Annotated[
        str | None, typer.Option(help="Another user's tokens (administrators).")
    ] = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List tokens (never their secrets)."""
    with client() as remote:
        rows = remote.list_tokens(user)
    if printed(rows, output):
        return
    table = Table("name", "user", "scopes", "expires", "revoked")
    table.columns.insert(0, Column("id", no_wrap=True, min_width=32))
    for row in rows:
        table.add_row(
            row.id,
            row.name,
            row.username,
            ",".join(row.scopes),
            when(row.expires_at, "never"),
            when(row.revoked_at),
        )
    out.print(table)


@app.command()
def revoke(
    token_id: Annotated[str, typer.Argument(help="Token id from 'bastion token list'.")],
) -> None:
    """Revoke a token; it stops working at once."""
    with client() as remote:
        remote.revoke_token(token_id)
    out.print(f"revoked {token_id}")
