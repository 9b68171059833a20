"""``bastion audit``: verify, export, checkpoint and read the tamper-evident log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bastion.cli.context import audit, out, record
from bastion.errors import InvalidInput
from bastion.security.audit_chain import unsigned_tail_text

app = typer.Typer(
    help="Verify, export and read the tamper-evident audit log.", no_args_is_help=True
)


@app.command()
def verify(
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", "-f", help="Verify this exported JSONL file instead of the local log."
        ),
    ] = None,
    public_key: Annotated[
        Path | None, typer.Option(help="PEM public key that signed the checkpoints (with --file).")
    ] = None,
) -> None:
    """Check every hash link and signed checkpoint; exit 1 naming the first bad event."""
    if file is not None:
        if public_key is None or not public_key.is_file():
            raise InvalidInput(
                "--file needs --public-key PEM (the key that signed the checkpoints)"
            )
        from bastion.security.audit_export import verify_export

        report = verify_export(file, public_keys=[public_key.read_bytes()])
    elif public_key is not None:
        raise InvalidInput("--public-key is only used with --file")
    else:
        report = audit().verify()
    out.print(f"{report.events} events verified, head {report.head_hash}")
    out.print(
        f"{report.checkpoints} signed checkpoint(s); signed through seq {report.signed_through}; "
        f"{unsigned_tail_text(report)}"
    )


@app.command()
def export(
    destination: Annotated[Path, typer.Argument(help="JSONL file to write.")],
) -> None:
    """Export every event as canonical JSON lines, after a signed head that covers them all."""
    log = audit()
    record("audit.export", str(destination))
    count = log.export(destination)
    out.print(f"exported {count} events to {destination}")


@app.command()
def checkpoint() -> None:
    """Sign the current head now."""
    cp = audit().checkpoint()
    out.print(f"signed checkpoint at seq {cp.seq}, head {cp.hash}")


@app.command()
def tail(
    count: Annotated[int, typer.Option("-n", min=1, max=10000, help="How many events.")] = 20,
) -> None:
    """Show the last events."""
    rows = audit().tail(count)
    table = Table("seq", "time", "actor", "action", "target")
    for row in rows:
        table.add_row(str(row.seq), row.ts, row.actor, row.action, row.target)
    out.print(table)
