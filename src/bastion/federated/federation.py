"""Starting and watching Flower's processes for one federated training (deployment mode).

One SuperLink (the aggregator's listener: Flower's Fleet, Control and runtime APIs on one
port, TLS with a CA made for the federation, admitting only the SuperNodes whose keys were
registered), one SuperNode per site dialling out to it, and the run submitted with ``flwr run``
as a Flower App (FAB) that holds only the plan and two one-line modules naming Bastion's
apps (:mod:`bastion.federated.apps`): the code that runs is the federated environment's,
never code shipped with the run. Nothing reaches the internet: telemetry, update checks
and run-time dependency installation are switched off for every process.

Every process gets its own session and is stopped (then killed) when the federation
closes, whatever happened; their output goes to files beside them, never an unread pipe.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bastion.errors import ConfigurationError, ServiceUnavailable
from bastion.federated.plan import PLAN_KEY, FederatedPlan
from bastion.federated.tls import LinkCertificates, link_certificates, site_key
from bastion.ports import free_port

__all__ = ["Federation", "FederationFailed", "SiteData", "federated_environment"]

#: Where ``make federated`` builds the environment: beside the main one.
ENV_SUFFIX = "-federated"
#: The SuperLink connection name the federation's own ``flwr`` configuration defines.
CONNECTION = "bastion"
_QUIET = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}


class FederationFailed(ServiceUnavailable):
    """A Flower process of the federation exited, or did not answer, or the run failed."""


def federated_environment() -> Path:
    """The federated environment: ``BASTION_FEDERATED_ENV``, else ``<this venv>-federated``."""
    chosen = os.environ.get("BASTION_FEDERATED_ENV")
    root = Path(chosen) if chosen else Path(sys.prefix + ENV_SUFFIX)
    if not (root / "bin" / "flower-superlink").is_file():
        raise ConfigurationError(
            f"no federated environment at {root} (Flower's flower-superlink is missing): "
            "build it with 'make federated' or set BASTION_FEDERATED_ENV"
        )
    return root


@dataclass(frozen=True)
class SiteData:
    """One site: its name and the file of its rows (``x_train``, ``y_train``, ``x_test``,
    ``y_test`` tensors in safetensors), read only by that site's processes."""

    name: str
    data: Path


@dataclass
class Federation:
    """The processes of one federated training under ``home`` (kept private)."""

    home: Path
    environment: Path = field(default_factory=federated_environment)
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    _processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    tls: LinkCertificates | None = None

    def _env(self) -> dict[str, str]:
        path = f"{self.environment / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        return {
            "PATH": path,
            "LANG": "C.UTF-8",
            "HOME": str(self.home),
            "FLWR_HOME": str(self.home / "flwr"),
            **_QUIET,
        }

    def _start(self, name: str, *argv: str) -> None:
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with (logs / f"{name}.log").open("ab") as output:
            self._processes[name] = subprocess.Popen(  # noqa: S603 - fixed programs
                [str(self.environment / "bin" / argv[0]), *argv[1:]],
                env=self._env(),
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self.home,
                start_new_session=True,
            )

    def log(self, name: str) -> str:
        path = self.home / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def _alive(self, name: str) -> None:
        code = self._processes[name].poll()
        if code is not None:
            tail = "\n".join(self.log(name).splitlines()[-5:])
            raise FederationFailed(f"Flower's {name} exited with code {code}: {tail}")

    def start_link(self, *, timeout: float = 120.0) -> None:
        """The SuperLink (the aggregator's one listener) over TLS with a CA made for this
        federation, admitting only registered SuperNodes; ready when its health check is."""
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.tls = link_certificates(self.home / "tls", host=self.host)
        self._start(
            "superlink",
            "flower-superlink",
            "--ssl-ca-certfile",
            str(self.tls.ca),
            "--ssl-certfile",
            str(self.tls.certificate),
            "--ssl-keyfile",
            str(self.tls.key),
            "--enable-supernode-auth",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--disable-runtime-dependency-installation",
        )
        deadline = time.monotonic() + timeout
        health = f"https://{self.host}:{self.port}/health"
        trusted = ssl.create_default_context(cafile=str(self.tls.ca))
        while True:
            self._alive("superlink")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(health, timeout=2, verify=trusted).is_success:
                    break
            if time.monotonic() > deadline:
                raise FederationFailed(f"Flower's SuperLink did not answer within {timeout:.0f} s")
            time.sleep(0.2)
        (self.home / "flwr").mkdir(mode=0o700, exist_ok=True)
        (self.home / "flwr" / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "{self.host}:{self.port}"\nroot-certificates = "{self.tls.ca}"\n'
        )

    def admit(self, site: str) -> Path:
        """Register a site's SuperNode key with the SuperLink (only registered nodes join);
        the private key's path, for :meth:`start_site`."""
        private, public = site_key(self.home / "keys", site)
        self._flwr("supernode", "register", str(public), CONNECTION, "--name", site)
        return private

    def start_site(self, site: SiteData, *, key: Path | None = None) -> None:
        """A site's SuperNode, dialling out to the SuperLink over TLS (trusting only this
        federation's CA) and authenticating with its key (:meth:`admit`). A node with an
        unregistered key, or with none, is refused by the SuperLink and exits."""
        if self.tls is None:
            raise FederationFailed("start the SuperLink before the sites")
        config = f'site="{site.name}" data="{site.data}"'
        signing = ["--auth-supernode-private-key", str(key)] if key is not None else []
        self._start(
            f"site-{site.name}",
            "flower-supernode",
            "--root-certificates",
            str(self.tls.ca),
            *signing,
            "--superlink",
            f"{self.host}:{self.port}",
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
            "--node-config",
            config,
        )

    def site_exit(self, name: str, *, timeout: float) -> int | None:
        """A site's SuperNode's exit code once it exited (None if it is still running)."""
        try:
            return self._processes[f"site-{name}"].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def _flwr(self, *args: str, timeout: float = 120.0) -> dict[str, Any]:
        done = subprocess.run(  # noqa: S603 - the environment's own flwr
            [str(self.environment / "bin" / "flwr"), *args, "--format", "json"],
            env=self._env(),
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        try:
            answer: dict[str, Any] = json.loads(done.stdout)
        except ValueError:
            raise FederationFailed(
                f"flwr {args[0]}: {(done.stdout + done.stderr).strip()[-500:]}"
            ) from None
        if done.returncode != 0 or not answer.get("success", False):
            raise FederationFailed(f"flwr {args[0]}: {answer.get('error-message') or answer}")
        return answer

    def submit(self, plan: FederatedPlan) -> str:
        """Write the Flower App for ``plan`` and start the run; its Flower run id."""
        app = write_app(self.home / "app", plan)
        answer = self._flwr("run", str(app), CONNECTION)
        return str(answer["run-id"])

    def status(self, run_id: str) -> dict[str, Any]:
        answer = self._flwr("ls", CONNECTION, "--run-id", run_id)
        runs = answer.get("runs") or []
        if not runs:
            raise FederationFailed(f"Flower knows no run {run_id}")
        status: dict[str, Any] = runs[0]
        return status

    def wait(self, run_id: str, *, timeout: float) -> dict[str, Any]:
        """Wait until the run finished; its last status (``finished:completed`` or not)."""
        deadline = time.monotonic() + timeout
        while True:
            self._alive("superlink")
            status = self.status(run_id)
            if str(status.get("status", "")).startswith("finished"):
                return status
            if time.monotonic() > deadline:
                raise FederationFailed(f"the federated run did not finish within {timeout:.0f} s")
            time.sleep(1.0)

    def server_log(self, run_id: str) -> str:
        """What the ServerApp of a run logged (Flower keeps it on the SuperLink)."""
        done = subprocess.run(  # noqa: S603 - the environment's own flwr
            [str(self.environment / "bin" / "flwr"), "log", run_id, CONNECTION, "--show"],
            env=self._env(),
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return done.stdout + done.stderr

    def close(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL after 10 s)."""
        for process in self._processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in self._processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    @contextlib.contextmanager
    def running(self) -> Iterator[Federation]:
        try:
            yield self
        finally:
            self.close()


_PYPROJECT = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "bastion-federated"
version = "1.0.0"
description = "Bastion federated training"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "bastion"

[tool.flwr.app.components]
serverapp = "bastion_app.server:app"
clientapp = "bastion_app.client:app"

[tool.flwr.app.config]
{key} = {plan}
"""


def write_app(folder: Path, plan: FederatedPlan) -> Path:
    """The Flower App of one run: the plan and two modules that name Bastion's apps."""
    package = folder / "bastion_app"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('"""Bastion\'s federated apps."""\n')
    # Flower checks the names statically: an assignment, not an import alias.
    for role in ("server", "client"):
        (package / f"{role}.py").write_text(
            f"from bastion.federated import apps\n\napp = apps.{role}_app\n"
        )
    text = json.dumps(plan.model_dump_json())  # a TOML basic string holding the JSON
    (folder / "pyproject.toml").write_text(_PYPROJECT.format(key=f'"{PLAN_KEY}"', plan=text))
    return folder
