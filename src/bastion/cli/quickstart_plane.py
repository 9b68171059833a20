"""The quickstart's own Bastion: an empty home, ``bastion up`` in the background, three people.

The quickstart owns its ``BASTION_HOME`` and work folder: it starts only in empty ones (or
ones an earlier quickstart left, which it clears), so it never touches a real installation.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bastion.agent.lifeline import bind_to_parent
from bastion.cli.up_cmd import CLUSTER, PROJECT
from bastion.client import Client, load_credentials
from bastion.config import Settings
from bastion.errors import InvalidInput, ServiceUnavailable
from bastion.files import atomic_write_bytes, ensure_private_dir
from bastion.ports import free_port, port_owner

__all__ = ["MARK", "PEOPLE", "Plane", "create_people", "free_port", "prepare", "running_plane"]

#: The file that says a home was made by the quickstart (and may be cleared by the next one).
MARK = "quickstart.json"
#: Who the quickstart creates, with their project role and what that role may do.
PEOPLE = {
    "ml-engineer": ("ml-engineer", "submits runs, requests promotion, deploys"),
    "reviewer": ("reviewer", "approves or rejects promotions; cannot train or deploy"),
}
STARTUP_SECONDS = 600.0
_DATABASE_VARIABLES = frozenset(
    {
        "BASTION_DATABASE_URL",
        "BASTION_LOCAL_AUDIT_DATABASE_URL",
        "BASTION_SERVER_DATABASE_URL",
        "BASTION_CONTROL_PLANE_DATABASE_URL",
    }
)


@dataclass
class Plane:
    """A control plane and the local agent, and a logged-in client per person."""

    url: str
    home: Path
    workdir: Path
    process: subprocess.Popen[bytes]
    clients: dict[str, Client] = field(default_factory=dict)
    passwords: Path | None = None

    @property
    def admin(self) -> Client:
        return self.clients["admin"]

    @property
    def engineer(self) -> Client:
        return self.clients["ml-engineer"]

    @property
    def reviewer(self) -> Client:
        return self.clients["reviewer"]


def _claim(folder: Path, what: str) -> bool:
    """Make ``folder`` empty and marked as the quickstart's; say whether an old one was cleared.

    Refuses a folder that holds anything the quickstart did not make.
    """
    cleared = False
    if (folder / MARK).is_file():
        shutil.rmtree(folder)
        cleared = True
    elif folder.exists() and any(folder.iterdir()):
        raise InvalidInput(
            f"{what} ({folder}) already holds files the quickstart did not make; give it an "
            "empty one, e.g. BASTION_HOME=$(mktemp -d) bastion quickstart --workdir $(mktemp -d)"
        )
    ensure_private_dir(folder)
    folder.chmod(0o700)  # an empty folder made by hand (0755): 'bastion up' refuses an open home
    atomic_write_bytes(folder / MARK, json.dumps({"made_by": "bastion quickstart"}).encode())
    return cleared


def prepare(home: Path, workdir: Path) -> bool:
    """Claim an empty Bastion home and, outside it, a work folder for the files the agent
    imports (it never imports from its own home); say whether an old quickstart was cleared."""
    if workdir.is_relative_to(home) or home.is_relative_to(workdir):
        raise InvalidInput(
            f"--workdir ({workdir}) and BASTION_HOME ({home}) must not contain one another: "
            "the agent refuses to import files from its own home"
        )
    cleared = _claim(home, "BASTION_HOME")
    return _claim(workdir, "--workdir") or cleared


def _wait_ready(plane: Plane, settings: Settings, log: Path, timeout: float) -> None:
    """(1) the credentials ``bastion up`` saves, (2) a healthy control plane, (3) an agent
    that has joined cluster 'local' and beats."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if plane.process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise ServiceUnavailable(f"'bastion up' exited at start:\n{tail}")
        if settings.credentials_file.is_file():
            try:
                healthy = httpx.get(f"{plane.url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                healthy = False
            if healthy:
                if "admin" not in plane.clients:
                    url, token, verify = load_credentials(settings)
                    plane.clients["admin"] = Client(url, token=token, verify=verify)
                clusters = plane.admin.list_clusters()
                if any(c.name == CLUSTER and c.last_heartbeat for c in clusters):
                    return
        time.sleep(0.3)
    raise ServiceUnavailable(
        f"the control plane and agent were not ready within {timeout:.0f} s; see {log} "
        "(a slow host may need more: --timeout)"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _embedded_env(home: Path) -> dict[str, str]:
    """This process's environment on embedded defaults: SQLite in ``home``, whatever
    databases the caller's environment names (a real installation's) left out."""
    env = {k: v for k, v in os.environ.items() if k not in _DATABASE_VARIABLES}
    return {**env, "BASTION_HOME": str(home)}


@contextmanager
def running_plane(
    settings: Settings, workdir: Path, *, port: int, timeout: float = STARTUP_SECONDS
) -> Iterator[Plane]:
    """``bastion up`` in the background for the ``with`` block; stopped on the way out."""
    owner = port_owner(port)
    if owner is not None:
        raise InvalidInput(
            f"port {port} is in use ({owner}); stop it or choose another with --port "
            "(make quickstart QUICKSTART_PORT=...)"
        )
    log = workdir / "bastion-up.log"
    plane_home = settings.home_dir.absolute()  # the child starts in another folder
    parent = os.getpid()
    with log.open("wb") as sink:
        process = subprocess.Popen(  # noqa: S603 - our own console script
            [
                str(Path(sys.executable).with_name("bastion")),
                "up",
                f"--port={port}",
                f"--timeout={timeout:g}",
            ],
            # The agent may register files under the folder it starts in: the work folder.
            cwd=workdir,
            env=_embedded_env(plane_home),
            stdout=sink,
            stderr=subprocess.STDOUT,
            # Killed outright, the quickstart still takes 'bastion up' (and so the control
            # plane) with it.
            preexec_fn=lambda: bind_to_parent(parent),  # noqa: PLW1509 - no threads yet
        )
    plane = Plane(url=f"http://127.0.0.1:{port}", home=plane_home, workdir=workdir, process=process)
    try:
        _wait_ready(plane, settings, log, timeout)
        yield plane
    finally:
        for client in plane.clients.values():
            client.close()
        _stop(process)


def create_people(plane: Plane) -> dict[str, str]:
    """The two project members, passwords for all three (written to a 0600 file, never
    printed), and a logged-in client for each; return name -> role."""
    passwords = {"admin": secrets.token_urlsafe(16)}
    plane.admin.set_password("admin", passwords["admin"])
    for name, (role, _) in PEOPLE.items():
        passwords[name] = secrets.token_urlsafe(16)
        plane.admin.create_user(name, password=passwords[name])
        plane.admin.set_member(PROJECT, name, role)
        person = Client(plane.url)
        person.login(name, passwords[name])
        plane.clients[name] = person
    plane.passwords = plane.workdir / "passwords.txt"
    lines = [f"{name}\t{password}" for name, password in passwords.items()]
    atomic_write_bytes(plane.passwords, ("\n".join(lines) + "\n").encode())
    return {"admin": "administrator", **{name: role for name, (role, _) in PEOPLE.items()}}
