"""``bastion demo``: the security core end to end on generated data, explained as it goes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bastion.cli.context import settings


def demo(
    workdir: Annotated[
        Path | None, typer.Option(help="Where to write demo files (default: BASTION_HOME/demo).")
    ] = None,
) -> None:
    """Run the security core end to end: encrypt, sign, scan, rotate, audit."""
    from bastion.cli.demo_steps import run_demo

    run_demo(workdir or settings().home_dir / "demo")


def register(app: typer.Typer) -> None:
    app.command()(demo)
