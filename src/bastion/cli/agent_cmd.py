"""``bastion cluster`` and ``bastion agent``: register compute planes and run their agents."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import SecretStr
from rich.table import Table

from bastion.cli.context import err, out, settings, when
from bastion.cli.output import Output, OutputFormat, printed
from bastion.cli.remote import client
from bastion.errors import InvalidInput

if TYPE_CHECKING:
    from bastion.client import Capacity

clusters = typer.Typer(help="Register compute planes (clusters).", no_args_is_help=True)
agents = typer.Typer(help="Run a cluster's agent next to the data.", no_args_is_help=True)


@clusters.command("create")
def create_cluster(
    name: Annotated[str, typer.Argument(help="Cluster name.")],
    description: Annotated[str, typer.Option(help="Where it runs.")] = "",
) -> None:
    """Register a cluster and print its one-time join token."""
    with client() as remote:
        cluster = remote.create_cluster(name, description=description)
    out.print(f"created cluster {cluster.name}; join token (shown once):")
    out.print(cluster.join_token, markup=False)


@clusters.command("join-token")
def join_token(
    name: Annotated[str, typer.Argument(help="Cluster name.")],
    hours: Annotated[int, typer.Option(min=1, max=720, help="How long it may be used.")] = 24,
) -> None:
    """Print a new one-time join token for the cluster's agent (shown once, on one line)."""
    with client() as remote:
        minted = remote.new_join_token(name, hours=hours)
    out.print(f"join token for cluster {minted.cluster} (shown once, valid {hours} h):")
    out.print(minted.join_token, markup=False)


@clusters.command("list")
def list_clusters(output: Output = OutputFormat.TABLE) -> None:
    """List clusters with their agents' last heartbeat and what their hosts advertise."""
    with client() as remote:
        rows = remote.list_clusters()
    if printed(rows, output):
        return
    table = Table("name", "last heartbeat", "signing key", "jobs", "CPUs", "memory", "GPUs")
    isolation = {"bubblewrap": "sandboxed", "none": "UNSANDBOXED", None: ""}
    for row in rows:
        table.add_row(
            row.name,
            when(row.last_heartbeat, "never"),
            "published" if row.signing_public_key else "",
            isolation[row.isolation],
            *capacity_cells(row.capacity),
        )
    out.print(table)


def capacity_cells(capacity: Capacity | None) -> tuple[str, str, str]:
    """CPUs, memory and GPUs as the table shows them ("" until the agent advertised)."""
    if capacity is None:
        return "", "", ""
    gpus = capacity.gpus
    names = sorted({gpu.name for gpu in gpus})
    shown = f"{len(gpus)} ({', '.join(names)})" if gpus and names != [""] else str(len(gpus))
    return str(capacity.cpus), f"{capacity.memory_mb / 1024:.1f} GiB", shown


@agents.command("start")
def start(
    cluster: Annotated[str, typer.Option("--cluster", "-c", help="The cluster this agent serves.")],
    control_plane: Annotated[str, typer.Option(help="Control plane URL (https://...).")],
    join_token: Annotated[
        str | None,
        typer.Option(
            help="One-time join token (first start only). Visible to every local user in the "
            "process list: prefer --join-token-file or BASTION_JOIN_TOKEN."
        ),
    ] = None,
    join_token_file: Annotated[
        Path | None,
        typer.Option(help="A file (mode 0600) holding the one-time join token (first start only)."),
    ] = None,
    storage: Annotated[Path | None, typer.Option(help="Storage root for runs.")] = None,
    executor: Annotated[str, typer.Option(help="local or ray.")] = "local",
    max_parallel: Annotated[int, typer.Option(min=1, max=256, help="Jobs at once.")] = 2,
    ca_cert: Annotated[
        str | None, typer.Option(help="PEM bundle of a private CA to trust.")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="HOST:PORT of the Ray cluster (with --executor ray).")
    ] = None,
    heartbeat_seconds: Annotated[
        float,
        typer.Option(
            min=0.2,
            max=20,
            help="Seconds between heartbeats (the control plane calls an agent silent after 30).",
        ),
    ] = 5.0,
    import_root: Annotated[
        list[Path] | None,
        typer.Option(help="A directory whose files may be registered as datasets (repeatable)."),
    ] = None,
    no_sandbox: Annotated[
        bool,
        typer.Option(
            "--no-sandbox",
            help="Run jobs without bubblewrap: they can read this host's keys and reach the "
            "network. Every run and model is marked unsandboxed, and compliance reports fail.",
        ),
    ] = False,
    gpus: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=64,
            help="Advertise and give jobs at most this many of the host's GPUs (0: none); "
            "default BASTION_AGENT_GPUS, else every GPU torch.cuda finds.",
        ),
    ] = None,
) -> None:
    """Join (once), then heartbeat and run leased jobs, each in a sandbox, until interrupted."""
    from bastion.agent.loop import AgentConfig, run_agent

    config = AgentConfig(
        cluster=cluster,
        url=control_plane,
        storage=storage or settings().storage_dir,
        executor=executor,
        max_parallel=max_parallel,
        ca_cert=ca_cert,
        ray_address=ray_address,
        heartbeat_seconds=heartbeat_seconds,
        import_roots=tuple(path.resolve() for path in import_root or ()),
        sandbox=not no_sandbox,
        gpus=gpus if gpus is not None else settings().agent_gpus,
    )
    token = join_token_from(option=join_token, file=join_token_file, env=settings().join_token)
    agent = run_agent(config, settings(), join_token=token)

    def _stop(*_args: Any) -> None:
        agent.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    out.print(f"agent of cluster {cluster} connected to {control_plane}; storage {config.storage}")
    out.print(f"jobs run {agent.sandbox_description}")
    agent.run()


def join_token_from(*, option: str | None, file: Path | None, env: SecretStr | None) -> str | None:
    """The join token from exactly one of --join-token-file, BASTION_JOIN_TOKEN or
    --join-token (the last shows in ``ps``, so it is warned about)."""
    sources = (("--join-token-file", file), ("BASTION_JOIN_TOKEN", env), ("--join-token", option))
    given = [name for name, value in sources if value is not None]
    if len(given) > 1:
        raise InvalidInput(f"give the join token once, not by {' and '.join(given)}")
    if file is not None:
        if not file.is_file():
            raise InvalidInput(f"--join-token-file {file}: no such file")
        if file.stat().st_mode & 0o077:
            raise InvalidInput(
                f"--join-token-file {file} is readable by group or others; chmod 600 it"
            )
        token = file.read_text(encoding="utf-8").strip()
        if not token:
            raise InvalidInput(f"--join-token-file {file} is empty")
        return token
    if env is not None:
        return env.get_secret_value()
    if option is not None:
        err.print(
            "warning: --join-token is visible in the process list; "
            "use --join-token-file or BASTION_JOIN_TOKEN"
        )
    return option
