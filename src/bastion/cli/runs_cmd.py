"""``bastion run``: submit, follow, inspect and cancel runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.spinner import Spinner
from rich.table import Table

from bastion.cli.context import out, when
from bastion.cli.output import Output, OutputFormat, printed
from bastion.cli.remote import client
from bastion.client import Client, LogLineOut, RunEventOut
from bastion.errors import CheckFailed
from bastion.progress import parse_progress

app = typer.Typer(help="Submit and follow runs.", no_args_is_help=True)

Project = Annotated[
    str, typer.Option("--project", "-p", envvar="BASTION_PROJECT", help="Project of the run.")
]
_TERMINAL = {"succeeded", "failed", "cancelled"}


class _Display:
    """A spinner with the run's status, and a bar for each count the job reports in its
    log (epochs, shadow models); drawn on a terminal only (logs and pipes get the lines)."""

    def __init__(self) -> None:
        self.spinner = Spinner("dots", text="waiting for the agent")
        self.bars = Progress(
            TextColumn("  {task.description}"),
            BarColumn(bar_width=40),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        self.counted: dict[str, TaskID] = {}
        self.live = Live(
            Group(self.spinner, self.bars), console=out, transient=True, refresh_per_second=8
        )

    def __enter__(self) -> _Display:
        if out.is_terminal:
            self.live.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if out.is_terminal:
            self.live.stop()

    def status(self, text: str) -> None:
        self.spinner.update(text=text)

    def line(self, text: str) -> None:
        counted = parse_progress(text)
        if counted is None:
            return
        what, done, total = counted
        if what not in self.counted:
            self.counted[what] = self.bars.add_task(f"{what}s", total=total)
        self.bars.update(self.counted[what], completed=done, total=total)


def follow_run(
    remote: Client, project: str, run_id: str, *, poll: float = 0.5, echo: bool = True
) -> str:
    """Print events and log lines as they arrive (unless ``echo`` is off), under a live
    status line and progress bars; return the final status."""
    seen_events, last_log = 0, 0
    with _Display() as display:
        while True:
            run = remote.get_run(project, run_id)
            events = remote.run_events(project, run_id)
            lines = remote.run_logs(project, run_id, after=last_log)
            # Print events and log lines together, in the order they happened (an event
            # first when both have the same time).
            merged: list[RunEventOut | LogLineOut] = [*events[seen_events:], *lines]
            for item in sorted(merged, key=lambda i: (i.ts, isinstance(i, LogLineOut))):
                if isinstance(item, LogLineOut):
                    display.line(item.line)
                    if echo:
                        out.print(f"  {item.line}", markup=False)
                elif echo:
                    out.print(
                        f"[bold]{item.stage}[/bold] {item.status}  {item.message}",
                        highlight=False,
                    )
            seen_events = len(events)
            if lines:
                last_log = lines[-1].id
            stage = events[-1].stage if events else "-"
            waiting = f": {run.status_reason}" if run.status == "queued" else ""
            display.status(
                f"run {run_id[:12]}: {run.status}, stage {stage} (attempt {run.attempt}){waiting}"
            )
            if run.status in _TERMINAL:
                return run.status
            time.sleep(poll)


@app.command()
def submit(
    spec: Annotated[Path, typer.Argument(help="Run spec (YAML).")],
    follow: Annotated[
        bool, typer.Option("--follow/--no-follow", help="Stream stages and logs until it ends.")
    ] = False,
) -> None:
    """Validate a spec and queue it; exit 1 if a followed run does not succeed."""
    from bastion.spec import load_spec

    parsed = load_spec(spec)  # refused here, before anything is queued
    with client() as remote:
        run = remote.submit_run(parsed.model_dump(mode="json"))
        out.print(f"queued run {run.id} ({run.status_reason})")
        if follow:
            status = follow_run(remote, parsed.project, run.id)
            out.print(f"run {run.id} {status}")
            if status != "succeeded":
                raise CheckFailed(f"run {run.id} {status}")


@app.command("list")
def list_runs(project: Project, output: Output = OutputFormat.TABLE) -> None:
    """List a project's runs, newest first."""
    with client() as remote:
        rows = remote.list_runs(project)
    if printed(rows, output):
        return
    table = Table("id", "name", "status", "attempt", "reason", "created")
    for row in rows:
        table.add_row(
            row.id,
            row.name,
            row.status,
            str(row.attempt),
            row.status_reason,
            when(row.created_at),
        )
    out.print(table)


@app.command()
def show(
    run_id: Annotated[str, typer.Argument()], project: Project, output: Output = OutputFormat.TABLE
) -> None:
    """Show a run's status, events and latest metrics."""
    with client() as remote:
        run = remote.get_run(project, run_id)
        events = remote.run_events(project, run_id)
        metrics = remote.run_metrics(project, run_id)
    if printed({"run": run, "events": events, "metrics": metrics}, output):
        return
    out.print(f"run {run.id} {run.name}: {run.status} (attempt {run.attempt})")
    out.print(f"  {run.status_reason}", markup=False)
    for event in events:
        out.print(
            f"  {when(event.ts)} {event.stage} {event.status} {event.message}",
            markup=False,
        )
    if metrics:
        last = metrics[-1]
        latest = f"{last.name}={last.value:.4g} at step {last.step}"
        out.print(f"  {len(metrics)} metric points; last {latest}")


@app.command()
def logs(
    run_id: Annotated[str, typer.Argument()],
    project: Project,
    follow: Annotated[
        bool, typer.Option("--follow/--no-follow", help="Keep printing until the run ends.")
    ] = False,
) -> None:
    """Print a run's log lines."""
    with client() as remote:
        if follow:
            follow_run(remote, project, run_id)
            return
        for line in remote.run_logs(project, run_id):
            out.print(line.line, markup=False)


@app.command()
def cancel(run_id: Annotated[str, typer.Argument()], project: Project) -> None:
    """Cancel a run; its agent stops the job at the next heartbeat."""
    with client() as remote:
        run = remote.cancel_run(project, run_id)
    out.print(f"run {run.id} {run.status}")
