"""The ``bastion`` command: wires the verbs together and turns errors into exit codes.

Exit codes: 0 ok; 1 a check failed (integrity, signature, unsafe file, audit chain,
policy); 2 bad usage or bad input. Errors are one line on stderr; ``--debug`` adds
the traceback.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Annotated

import typer
import typer.main

# Typer carries its own copy of click; its command and context types are these.
from typer._click.core import Command, Context
from typer.core import TyperGroup

from bastion import __version__
from bastion.cli.context import default_project, err, reset, state
from bastion.errors import BastionError

__all__ = ["app", "main", "run"]

#: Each noun's Typer app, by the name it is called with: (module, attribute).
NOUNS: dict[str, tuple[str, str]] = {
    "keys": ("bastion.cli.keys_cmd", "app"),
    "audit": ("bastion.cli.audit_cmd", "app"),
    "server": ("bastion.cli.server_cmd", "app"),
    "user": ("bastion.cli.users_cmd", "app"),
    "project": ("bastion.cli.projects_cmd", "projects"),
    "member": ("bastion.cli.projects_cmd", "members"),
    "token": ("bastion.cli.tokens_cmd", "app"),
    "cluster": ("bastion.cli.agent_cmd", "clusters"),
    "agent": ("bastion.cli.agent_cmd", "agents"),
    "run": ("bastion.cli.runs_cmd", "app"),
    "data": ("bastion.cli.data_cmd", "app"),
    "model": ("bastion.cli.models_cmd", "app"),
    "eval": ("bastion.cli.eval_cmd", "app"),
    "policy": ("bastion.cli.policy_cmd", "app"),
    "alerts": ("bastion.cli.alerts_cmd", "app"),
    "compliance": ("bastion.cli.compliance_cmd", "app"),
    "privacy": ("bastion.cli.privacy_cmd", "app"),
    "deploy": ("bastion.cli.deploy_cmd", "app"),
    "code": ("bastion.cli.code_cmd", "app"),
}
#: The top-level verbs, by the module whose ``register(app)`` adds them.
VERBS: dict[str, str] = {
    "encrypt": "bastion.cli.crypto_cmd",
    "decrypt": "bastion.cli.crypto_cmd",
    "shred": "bastion.cli.crypto_cmd",
    "sign": "bastion.cli.sign_cmd",
    "verify": "bastion.cli.sign_cmd",
    "scan-file": "bastion.cli.scan_cmd",
    "demo": "bastion.cli.demo_cmd",
    "quickstart": "bastion.cli.quickstart_cmd",
    "login": "bastion.cli.session_cmd",
    "logout": "bastion.cli.session_cmd",
    "up": "bastion.cli.up_cmd",
}


def _load(name: str) -> Command | None:
    """The command ``name``, importing only the module that defines it."""
    if name in NOUNS:
        module, attribute = NOUNS[name]
        noun = typer.main.get_group(getattr(importlib.import_module(module), attribute))
        noun.name = name
        return noun
    if name in VERBS:
        verbs = typer.Typer()
        importlib.import_module(VERBS[name]).register(verbs)
        return typer.main.get_group(verbs).commands.get(name)
    return None


class _LazyGroup(TyperGroup):
    """The root command: a verb's module (and what it imports: the SDK, Tink, torch ...) is
    imported when the command line names it, so ``bastion --version`` or ``bastion run list``
    does not pay for every other verb."""

    def list_commands(self, ctx: Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *NOUNS, *VERBS})

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        return super().get_command(ctx, cmd_name) or _load(cmd_name)


app = typer.Typer(
    cls=_LazyGroup,
    name="bastion",
    help="Bastion: train, evaluate and deploy models on sensitive data, securely.",
    no_args_is_help=True,
    add_completion=True,
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


def _os_error(exc: OSError) -> str:
    """An operating-system refusal as one line: what failed, on which file, what to do."""
    what = exc.strerror or type(exc).__name__
    where = f": {exc.filename}" if exc.filename else ""
    advice = {
        errno.ENOSPC: "; free some space and run it again (files are written whole or not at all)",
        errno.EACCES: "; check the file's owner and mode",
        errno.EROFS: "; the file system is read-only",
    }.get(exc.errno or 0, "")
    return f"{what}{where}{advice}"


def _refused(exc: BastionError | OSError) -> int:
    """Print a refusal as one line (its traceback too with ``--debug``); its exit code."""
    if state.debug:
        err.print_exception()
    if isinstance(exc, BastionError):
        err.print(f"error: {exc}", markup=False)
        return exc.exit_code
    err.print(f"error: {_os_error(exc)}", markup=False)
    return 2


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv``; return the exit code instead of exiting."""
    reset()
    command = typer.main.get_command(app)
    try:
        with default_project():
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
    except (BastionError, OSError) as exc:  # OSError: the disk or file system said no
        return _refused(exc)
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
