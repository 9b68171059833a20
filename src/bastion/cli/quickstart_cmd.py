"""``bastion quickstart``: the whole secure lifecycle in one command, on embedded defaults."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from bastion.cli.context import out, settings
from bastion.cli.up_cmd import PROJECT


def quickstart(
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="Port of the control plane and dashboard.")
    ] = 8600,
    workdir: Annotated[
        Path,
        typer.Option(
            help="Folder for the quickstart's files: data, spec, card, report, passwords, log."
        ),
    ] = Path("bastion-quickstart"),
    keep_running: Annotated[
        bool,
        typer.Option("--keep-running", help="Leave Bastion up at the end (Ctrl-C stops it)."),
    ] = False,
    timeout: Annotated[
        float,
        typer.Option(
            min=1,
            help="Seconds to wait for the control plane and agent to be ready (a slow host "
            "needs more).",
        ),
    ] = 600.0,
    shadow_models: Annotated[
        int,
        typer.Option(
            min=2,
            max=64,
            help="Shadow models of the LiRA membership attack (fewer: a quicker, weaker audit).",
        ),
    ] = 16,
) -> None:
    """Start Bastion in an empty BASTION_HOME and take a model from raw data to production.

    Register and pseudonymise a patients table, train with DP-SGD and adversarial training,
    attack the model, pass the policy gates with a reviewer's approval, deploy and call it,
    then verify the audit chain and write the HIPAA report. Exits 1 if any step fails.
    """
    from bastion.cli.quickstart_plane import prepare, running_plane
    from bastion.cli.quickstart_steps import lifecycle

    # A terminated quickstart still stops the Bastion it started (the with-block's exit).
    signal.signal(signal.SIGTERM, _interrupted)
    config = settings()
    started = time.monotonic()
    home, workdir = config.home_dir.absolute(), workdir.absolute()
    if prepare(home, workdir):
        out.print("cleared the files of the previous quickstart")
    out.print(f"[bold]Bastion quickstart[/bold] in BASTION_HOME={home}, files in {workdir}")
    with running_plane(config, workdir, port=port, timeout=timeout) as plane:
        files, deployment = lifecycle(plane, shadow_models=shadow_models)
        minutes = (time.monotonic() - started) / 60
        out.print(f"\n[bold green]Every step did what it says[/bold green] ({minutes:.1f} min).")
        places = {
            "Bastion home (keys, databases)": home,
            "encrypted datasets, checkpoints, models": home / "storage",
            "control-plane database and audit log": home / "control-plane.db",
            **files,
            "the run spec": workdir / "patients-dp-pgd.yaml",
            "passwords (admin, ml-engineer, reviewer)": workdir / "passwords.txt",
            "control plane and agent log": workdir / "bastion-up.log",
        }
        out.print("[bold]Where everything is[/bold]")
        for label, path in places.items():
            out.print(f"  {label}: {path}", markup=False)
        dashboard = f"{plane.url}/ui/"
        if keep_running:
            out.print(f"dashboard: {dashboard} (log in as reviewer; Ctrl-C stops Bastion)")
            try:
                plane.process.wait()
            except KeyboardInterrupt:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: see above
                out.print("stopping")
            return
        plane.engineer.stop_deployment(PROJECT, deployment)
    out.print(
        f"Open the dashboard: BASTION_HOME={home} {Path(sys.executable).with_name('bastion')} "
        f"up --port {port}, then "
        f"{dashboard} (log in with a password from passwords.txt)."
    )
    out.print("Next: README.md (tour), docs/run-spec.md, docs/security.md.")


def _interrupted(*_args: Any) -> None:
    """The first SIGTERM unwinds the quickstart (stopping what it started on the way out);
    a second one while it stops would break off that clean-up, so it is ignored."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def register(app: typer.Typer) -> None:
    app.command()(quickstart)
