"""``bastion up``: a control plane and a local agent on this host, on embedded defaults."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from bastion.cli.context import out, settings
from bastion.errors import ServiceUnavailable

CLUSTER = "local"
PROJECT = "demo"


def _wait_healthy(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ServiceUnavailable(
                "the control plane exited at start; run 'bastion server start' to see why"
            )
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise ServiceUnavailable(f"the control plane at {url} did not come up within 60 s")


def up(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the control plane.")] = 8600,
    max_parallel: Annotated[int, typer.Option(min=1, max=64, help="Jobs at once.")] = 2,
    executor: Annotated[str, typer.Option(help="local or ray.")] = "local",
    ray_address: Annotated[
        str | None, typer.Option(help="HOST:PORT of a Ray cluster (with --executor ray).")
    ] = None,
) -> None:
    """Start the control plane and a local agent (cluster 'local'); log the local admin in."""
    from bastion.agent.loop import AgentConfig, run_agent
    from bastion.client import save_credentials
    from bastion.server.app import build_database
    from bastion.server.services.bootstrap import initialise
    from bastion.server.services.clusters import create_cluster
    from bastion.server.services.projects import create_project

    config = settings()
    config.private_home()  # created 0700, or refused before anything is written in it
    url = f"http://127.0.0.1:{port}"
    database = build_database(config)
    agent_home_credential = config.home_dir / f"agent-{CLUSTER}.json"
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
    elif not agent_home_credential.is_file():
        out.print(
            "warning: credentials exist but the local agent never joined; it will fail to start"
        )
    database.engine.dispose()
    server = subprocess.Popen(  # noqa: S603 - our own console script
        [str(Path(sys.executable).with_name("bastion")), "server", "start", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_healthy(url, server)
        agent = run_agent(
            AgentConfig(
                cluster=CLUSTER,
                url=url,
                storage=config.storage_dir,
                max_parallel=max_parallel,
                # On one host, files under the directory 'bastion up' started in may be registered.
                import_roots=(Path.cwd(),),
            ),
            config,
            join_token=join_token,
        )

        def _stop(*_args: Any) -> None:
            agent.stop()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        out.print(f"Bastion is up: control plane {url}, agent of cluster {CLUSTER!r}")
        out.print(
            "you are logged in as 'admin'; try: bastion run submit examples/smoke.yaml --follow"
        )
        out.print(
            f"dashboard: {url}/ui/ (give a person a password first: bastion user password admin)"
        )
        out.print("stop with Ctrl-C")
        agent.run()
    finally:
        server.terminate()
        server.wait(timeout=30)
        out.print("Bastion stopped")


def register(app: typer.Typer) -> None:
    app.command()(up)
