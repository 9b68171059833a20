"""``bastion data``: datasets in the compute plane (reference workloads so far)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bastion.cli.context import out

app = typer.Typer(help="Datasets in the compute plane.", no_args_is_help=True)


@app.command()
def reference(
    kind: Annotated[str, typer.Argument(help="patients, digits or table.")],
    out_path: Annotated[Path, typer.Option("--out", help="File to write (.csv, .parquet, .npz).")],
    rows: Annotated[
        int | None, typer.Option(min=1, max=10**7, help="Rows (patients, table).")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Generator seed.")] = 0,
) -> None:
    """Generate a reference workload offline, under a fixed seed."""
    from bastion.data.reference import Reference, write_reference
    from bastion.errors import InvalidInput

    try:
        chosen = Reference(kind)
    except ValueError:
        raise InvalidInput(f"unknown reference {kind!r}; use patients, digits or table") from None
    path = write_reference(chosen, out=out_path, rows=rows, seed=seed)
    out.print(f"wrote {chosen.value} reference data to {path} (seed {seed})")
