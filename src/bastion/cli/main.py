"""The ``bastion`` command: wires the verbs together and turns errors into exit codes.

Exit codes: 0 ok; 1 a check failed (integrity, signature, unsafe file, audit chain,
policy); 2 bad usage or bad input. Errors are one line on stderr; ``--debug`` adds
the traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from bastion import __version__
from bastion.cli import (
    agent_cmd,
    alerts_cmd,
    audit_cmd,
    compliance_cmd,
    crypto_cmd,
    data_cmd,
    demo_cmd,
    deploy_cmd,
    eval_cmd,
    keys_cmd,
    models_cmd,
    policy_cmd,
    privacy_cmd,
    projects_cmd,
    quickstart_cmd,
    runs_cmd,
    scan_cmd,
    server_cmd,
    session_cmd,
    sign_cmd,
    tokens_cmd,
    up_cmd,
    users_cmd,
)
from bastion.cli.context import err, reset, state
from bastion.errors import BastionError

__all__ = ["app", "main", "run"]

app = typer.Typer(
    name="bastion",
    help="Bastion: train, evaluate and deploy models on sensitive data, securely.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bastion {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    state.debug = debug


crypto_cmd.register(app)
sign_cmd.register(app)
scan_cmd.register(app)
demo_cmd.register(app)
quickstart_cmd.register(app)
session_cmd.register(app)
up_cmd.register(app)
app.add_typer(keys_cmd.app, name="keys")
app.add_typer(audit_cmd.app, name="audit")
app.add_typer(server_cmd.app, name="server")
app.add_typer(users_cmd.app, name="user")
app.add_typer(projects_cmd.projects, name="project")
app.add_typer(projects_cmd.members, name="member")
app.add_typer(tokens_cmd.app, name="token")
app.add_typer(agent_cmd.clusters, name="cluster")
app.add_typer(agent_cmd.agents, name="agent")
app.add_typer(runs_cmd.app, name="run")
app.add_typer(data_cmd.app, name="data")
app.add_typer(models_cmd.app, name="model")
app.add_typer(eval_cmd.app, name="eval")
app.add_typer(policy_cmd.app, name="policy")
app.add_typer(alerts_cmd.app, name="alerts")
app.add_typer(compliance_cmd.app, name="compliance")
app.add_typer(privacy_cmd.app, name="privacy")
app.add_typer(deploy_cmd.app, name="deploy")


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv``; return the exit code instead of exiting."""
    reset()
    command = typer.main.get_command(app)
    try:
        result = command.main(
            args=list(argv) if argv is not None else None,
            prog_name="bastion",
            standalone_mode=False,
        )
    except typer.Exit as exc:
        return exc.exit_code
    except typer.TyperException as exc:  # usage errors: unknown option, bad value ...
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            err.print(f"error: {exc.format_message()}", markup=False)
        return exc.exit_code
    except typer.Abort:
        err.print("error: aborted")
        return 1
    except BastionError as exc:
        if state.debug:
            err.print_exception()
        err.print(f"error: {exc}", markup=False)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("error: interrupted")
        return 130
    return result if isinstance(result, int) else 0


def main() -> None:
    # What Bastion creates (databases and their journals, keys, storage, logs, credentials,
    # files written for the user) is the user's alone, whatever umask the shell had; the
    # processes it starts (control plane workers, agent, jobs) inherit this.
    os.umask(0o077)
    sys.exit(run())
