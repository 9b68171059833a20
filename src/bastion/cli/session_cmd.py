"""``bastion login`` and ``bastion logout``: credentials for the control plane."""

from __future__ import annotations

from typing import Annotated

import typer

from bastion.cli.context import out, settings
from bastion.client import Client, save_credentials
from bastion.errors import InvalidInput


def login(
    url: Annotated[str, typer.Option(help="Control plane URL, e.g. https://bastion.example:8600.")],
    token: Annotated[
        str | None, typer.Option(help="API token (or use --username to log in with a password).")
    ] = None,
    username: Annotated[str | None, typer.Option(help="Log in with this user's password.")] = None,
    ca_cert: Annotated[
        str | None, typer.Option(help="PEM bundle of a private CA to trust for HTTPS.")
    ] = None,
) -> None:
    """Check the credential against the server, then store it in BASTION_HOME (mode 0600)."""
    if (token is None) == (username is None):
        raise InvalidInput("give exactly one of --token or --username")
    verify: bool | str = ca_cert or True
    with Client(url, token=token, verify=verify) as remote:
        if username is not None:
            password = typer.prompt("password", hide_input=True)
            token = remote.login(username, password).token
        who = remote.whoami()
    path = save_credentials(settings(), url=url, token=str(token), verify=verify)
    out.print(f"logged in to {url} as {who.username}; credentials in {path}")


def logout() -> None:
    """Forget the stored control-plane credentials."""
    path = settings().credentials_file
    path.unlink(missing_ok=True)
    out.print("logged out")


def register(app: typer.Typer) -> None:
    app.command()(login)
    app.command()(logout)
