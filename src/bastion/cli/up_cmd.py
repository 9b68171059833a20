"""``bastion up``: a control plane and a local agent on this host, on embedded defaults.

Whatever it started is stopped on every way out: an error, Ctrl-C, SIGTERM (during start-up
too), and its own death (the control plane gets a parent-death signal). The control plane's
output goes to ``BASTION_HOME/logs/control-plane.log``, which every start-up error names. A
home left half made by a failed first start (credentials saved, agent never joined) is
repaired on the next run with a new join token.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import httpx
import typer

from bastion.cli.context import out, settings
from bastion.errors import InvalidInput, ServiceUnavailable
from bastion.files import ensure_private_dir
from bastion.ports import port_owner

if TYPE_CHECKING:
    from bastion.agent.loop import Agent

__all__ = ["register", "up"]

CLUSTER = "local"
PROJECT = "demo"


class _Stop:
    """The SIGTERM / SIGINT handler for the whole of ``bastion up``: it only records the
    request (and stops the agent once there is one); start-up checks it at known points, so
    no exception is thrown into the middle of starting a process."""

    def __init__(self) -> None:
        self.requested = False
        self.agent: Agent | None = None

    def __call__(self, _signum: int, _frame: FrameType | None) -> None:
        self.requested = True
        if self.agent is not None:
            self.agent.stop()


def _wait_healthy(
    url: str, server: subprocess.Popen[bytes], *, timeout: float, log: Path, stop: _Stop
) -> bool:
    """Wait for the control plane's health check (no fixed sleep decides a healthy start);
    False when a stop was asked for meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stop.requested:
            return False
        if server.poll() is not None:
            raise ServiceUnavailable(f"the control plane exited at start; see {log}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            time.sleep(0.2)
    raise ServiceUnavailable(
        f"the control plane at {url} did not answer within {timeout:g} s (a slow host may need "
        f"more: --timeout); see {log}"
    )


@contextlib.contextmanager
def _stopped_on_exit(server: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        out.print("Bastion stopped")


def up(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the control plane.")] = 8600,
    max_parallel: Annotated[int, typer.Option(min=1, max=64, help="Jobs at once.")] = 2,
    executor: Annotated[str, typer.Option(help="local or ray.")] = "local",
    ray_address: Annotated[
        str | None, typer.Option(help="HOST:PORT of a Ray cluster (with --executor ray).")
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=1, max=3600, help="Seconds to wait for the control plane.")
    ] = 120,
    import_root: Annotated[
        list[Path] | None,
        typer.Option(
            help="Folder whose files may be registered (repeatable; default: the current one)."
        ),
    ] = None,
    no_sandbox: Annotated[
        bool,
        typer.Option(
            "--no-sandbox",
            help="Run jobs without bubblewrap (every run and model is marked unsandboxed).",
        ),
    ] = False,
) -> None:
    """Start the control plane and a local agent (cluster 'local'); log the local admin in."""
    from bastion.agent.lifeline import bind_to_parent
    from bastion.agent.loop import AgentConfig, run_agent
    from bastion.client import save_credentials
    from bastion.server.app import build_database
    from bastion.server.services.bootstrap import initialise
    from bastion.server.services.clusters import create_cluster, new_join_token
    from bastion.server.services.projects import create_project

    config = settings()
    config.private_home()  # created 0700, or refused before anything is written in it
    roots = tuple(root.expanduser().absolute() for root in import_root or [Path.cwd()])
    for root in roots:
        if not root.is_dir():
            raise InvalidInput(f"--import-root {root}: no such folder")
    owner = port_owner(port)
    if owner is not None:
        raise InvalidInput(f"port {port} is in use ({owner}); stop it or choose another: --port")
    url = f"http://127.0.0.1:{port}"
    database = build_database(config)
    join_token: str | None = None
    if not config.credentials_file.is_file():
        admin = initialise(database, username="admin", password=None)
        save_credentials(config, url=url, token=admin.token, verify=True)
        with database.write(actor="user:admin") as unit:
            create_project(unit, name=PROJECT, description="created by bastion up")
            _, join_token = create_cluster(
                unit, name=CLUSTER, description="this host", join_token_hours=1
            )
        out.print(f"created administrator 'admin', project {PROJECT!r} and cluster {CLUSTER!r}")
    elif not (config.home_dir / f"agent-{CLUSTER}.json").is_file():
        # A first start that failed before the agent joined: its token may be spent or expired.
        with database.write(actor="user:admin") as unit:
            join_token = new_join_token(unit, name=CLUSTER, hours=1)
        out.print("the local agent never joined; it joins now with a new token")
    database.engine.dispose()
    logs = ensure_private_dir(config.home_dir / "logs")
    log = logs / "control-plane.log"
    # SIGTERM or Ctrl-C, during start-up too, stops what was started.
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    parent = os.getpid()
    with log.open("ab") as sink:
        server = subprocess.Popen(  # noqa: S603 - our own console script
            [str(Path(sys.executable).with_name("bastion")), "server", "start", f"--port={port}"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: bind_to_parent(parent),  # noqa: PLW1509 - no threads yet
        )
    with _stopped_on_exit(server):
        if not _wait_healthy(url, server, timeout=timeout, log=log, stop=stop):
            return
        agent = run_agent(
            AgentConfig(
                cluster=CLUSTER,
                url=url,
                storage=config.storage_dir,
                executor=executor,
                ray_address=ray_address,
                max_parallel=max_parallel,
                import_roots=roots,
                sandbox=not no_sandbox,
            ),
            config,
            join_token=join_token,
        )
        stop.agent = agent
        if stop.requested:  # asked while the agent joined
            return
        _greet(url, roots=roots, log=log, sandbox=agent.sandbox_description)
        agent.run()


def _greet(url: str, *, roots: tuple[Path, ...], log: Path, sandbox: str) -> None:
    out.print(f"Bastion is up: control plane {url}, agent of cluster {CLUSTER!r}")
    out.print(f"  files under {', '.join(map(str, roots))} may be registered; log: {log}")
    out.print(f"  jobs run {sandbox}")
    out.print("you are logged in as 'admin'; try: bastion run submit examples/smoke.yaml --follow")
    out.print(f"dashboard: {url}/ui/ (give a person a password first: bastion user password admin)")
    out.print("stop with Ctrl-C")


def register(app: typer.Typer) -> None:
    app.command()(up)
