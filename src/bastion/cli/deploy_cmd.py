"""``bastion deploy``: serve a production model version from a cluster's agent."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from bastion.cli.context import out
from bastion.cli.keys_cmd import describe_key
from bastion.cli.output import Output, OutputFormat, printed
from bastion.cli.remote import client
from bastion.client import Client, DeploymentOut
from bastion.errors import ServiceUnavailable
from bastion.inference.config import ExtractionAction, OodAction, OutputMode

app = typer.Typer(
    help="Deploy model versions: verified loading, scoped keys, rate limits, guards, audit.",
    no_args_is_help=True,
)
Project = Annotated[
    str,
    typer.Option("--project", "-p", envvar="BASTION_PROJECT", help="Project of the deployment."),
]


@app.command()
def create(
    model: Annotated[str, typer.Argument(help="Model version NAME@V (production stage).")],
    project: Project,
    cluster: Annotated[str, typer.Option("--cluster", "-c", help="Cluster whose agent serves it.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Deployment name (default: the model's).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8443,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="PEM certificate (on the cluster).")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="PEM private key (on the cluster).")
    ] = None,
    reveal: Annotated[
        OutputMode,
        typer.Option("--reveal", help="What callers see of the prediction.", show_default=True),
    ] = OutputMode.ROUNDED,
    output: Annotated[  # the former spelling of --reveal (-o/--output is the output format)
        OutputMode | None, typer.Option("--output", hidden=True)
    ] = None,
    ood_action: Annotated[
        OodAction, typer.Option("--ood", help="Out-of-distribution inputs: flag or reject.")
    ] = OodAction.FLAG,
    extraction_action: Annotated[
        ExtractionAction,
        typer.Option(
            "--extraction", help="A key caught extracting the model: alert, throttle or block."
        ),
    ] = ExtractionAction.THROTTLE,
    allow_unapproved: Annotated[
        bool,
        typer.Option(
            "--allow-unapproved",
            help="Deploy a version not in production (audited; refused in production projects).",
        ),
    ] = False,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the server to come up (0: do not wait).")
    ] = 120.0,
    replicas: Annotated[
        int, typer.Option(help="Servers sharing the address; more than one needs --redis-url.")
    ] = 1,
    redis_url: Annotated[
        str | None, typer.Option("--redis-url", help="Redis for limits shared by replicas.")
    ] = None,
    max_text_chars: Annotated[
        int,
        typer.Option(
            "--max-text-chars", min=1, max=1_000_000, help="Text models: the longest text taken."
        ),
    ] = 20_000,
    max_new_tokens: Annotated[
        int,
        typer.Option(
            "--max-new-tokens", min=1, max=1024, help="Language models: the most tokens written."
        ),
    ] = 64,
) -> None:
    """Ask the cluster's agent to start ``bastion serve`` for a model version."""
    if (tls_cert is None) != (tls_key is None):
        raise typer.BadParameter("give both --tls-cert and --tls-key, or neither")
    body = {
        "name": name or model.split("@")[0],
        "model": model,
        "cluster": cluster,
        "host": host,
        "port": port,
        "tls_cert": str(tls_cert) if tls_cert else None,
        "tls_key": str(tls_key) if tls_key else None,
        "replicas": replicas,
        "redis_url": redis_url,
        "serve": {
            "output": (output or reveal).value,
            "ood_action": ood_action.value,
            "extraction_action": extraction_action.value,
            "max_text_chars": max_text_chars,
            "max_new_tokens": max_new_tokens,
        },
        "allow_unapproved": allow_unapproved,
    }
    with client() as remote:
        made = remote.create_deployment(project, **body)
        where = f"on cluster {cluster} (run {made.run_id})"
        out.print(f"deployment {made.name}: {made.model} {where}")
        if made.unapproved:
            out.print(
                "[yellow]not a production version: deployed with --allow-unapproved (audited)[/]"
            )

        def started(state: DeploymentOut) -> bool:
            if state.status in ("failed", "cancelled", "stopped"):
                out.print(f"[red]the server did not start: {escape(state.status_reason)}[/]")
                raise typer.Exit(1)
            if state.status != "running":
                return False
            out.print(f"[green]{escape(state.status_reason)}[/]")
            return True

        watch(
            remote,
            project,
            made.name,
            wait,
            settled=started,
            pending=lambda state: f"is still {state.status}",
        )


def watch(
    remote: Client,
    project: str,
    name: str,
    wait: float,
    *,
    settled: Callable[[DeploymentOut], bool],
    pending: Callable[[DeploymentOut], str],
) -> None:
    """Poll the deployment until ``settled`` says so (it prints, and exits 1 on a failure),
    for at most ``wait`` seconds; then say what it is still doing."""
    deadline = time.monotonic() + wait
    while wait > 0:
        state = remote.get_deployment(project, name)
        if settled(state):
            return
        if time.monotonic() > deadline:
            raise ServiceUnavailable(
                f"deployment {name} {pending(state)}; see 'bastion deploy show'"
            )
        time.sleep(0.5)


def _await_model(remote: Client, project: str, name: str, model: str, wait: float) -> None:
    """Wait until the server reports it serves ``model`` (or that it refused it)."""

    def swapped(state: DeploymentOut) -> bool:
        messages = [replica.message for replica in state.replicas]
        refused = [m for m in messages if m.startswith(f"swap to {model} refused")]
        if refused:
            out.print(f"[red]{escape(refused[0])}[/]; the server still serves the previous version")
            raise typer.Exit(1)
        if not all(m.startswith(f"serving {model} ") for m in messages):
            return False
        out.print(f"[green]{escape(messages[0])}[/] ({len(messages)} replica(s))")
        return True

    watch(
        remote,
        project,
        name,
        wait,
        settled=swapped,
        pending=lambda _: f"has not swapped to {model} yet",
    )


@app.command()
def update(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    project: Project,
    model: Annotated[str, typer.Option("--model", help="The version to serve now (NAME@V).")],
    allow_unapproved: Annotated[
        bool, typer.Option("--allow-unapproved", help="Serve a version not in production.")
    ] = False,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the swap.")] = 120.0,
) -> None:
    """Hot-swap to another version: verified first, swapped without dropping requests."""
    with client() as remote:
        remote.update_deployment(project, name, model=model, allow_unapproved=allow_unapproved)
        out.print(f"deployment {name}: swapping to {model}")
        _await_model(remote, project, name, model, wait)


@app.command()
def rollback(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    project: Project,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the swap.")] = 120.0,
) -> None:
    """Swap back to the version served before the last update."""
    with client() as remote:
        row = remote.rollback_deployment(project, name)
        out.print(f"deployment {name}: rolling back to {row.model}")
        _await_model(remote, project, name, row.model, wait)


@app.command("list")
def list_deployments(project: Project, output: Output = OutputFormat.TABLE) -> None:
    """Deployments of a project with their model and status."""
    with client() as remote:
        rows = remote.list_deployments(project)
    if printed(rows, output):
        return
    table = Table("name", "model", "cluster", "status", "where")
    for row in rows:
        where = f"{row.settings.get('host')}:{row.settings.get('port')}"
        table.add_row(row.name, row.model, row.cluster, row.status, where)
    out.print(table)


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    project: Project,
    output: Output = OutputFormat.TABLE,
) -> None:
    """One deployment: model, status, settings, keys."""
    with client() as remote:
        row = remote.get_deployment(project, name)
        keys = remote.list_serving_keys(project, name)
    if printed({"deployment": row, "keys": keys}, output):
        return
    out.print(f"deployment {row.name}: {row.model} on {row.cluster} — {row.status}")
    out.print(f"  {escape(row.status_reason)}")
    serve = row.settings.get("serve", {})
    guards = f"OOD {serve.get('ood_action')}, extraction {serve.get('extraction_action')}"
    out.print(f"  output {serve.get('output')}, {guards}")
    for key in keys:
        out.print(f"  key {describe_key(key)}")


@app.command()
def stop(name: Annotated[str, typer.Argument(help="Deployment name.")], project: Project) -> None:
    """Stop serving (the server drains its audit trail and exits)."""
    with client() as remote:
        row = remote.stop_deployment(project, name)
    out.print(f"deployment {row.name} stopped")
