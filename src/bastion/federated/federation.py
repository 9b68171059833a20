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

import ast
import contextlib
import json
import os
import re
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
from bastion.federated.plan import HISTORY, PLAN_KEY, STATS, FederatedPlan
from bastion.federated.tls import LinkCertificates, link_certificates, made_link, site_key
from bastion.ports import free_port

__all__ = ["Federation", "FederationFailed", "SiteData", "federated_environment"]

#: Where ``make federated`` builds the environment: beside the main one.
ENV_SUFFIX = "-federated"
#: The files a ServerApp writes last, when its run completes (a training run, a statistics run).
FINAL_FILES = (HISTORY, STATS)
#: The SuperLink connection name the federation's own ``flwr`` configuration defines.
CONNECTION = "bastion"
_QUIET = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}


#: A SuperLink log line for a node it refused, with the node's public key (a bytes repr).
_REFUSED = re.compile(r"Attempted to register SuperNode with public key: (b'[^']{40,2000}')")


class FederationFailed(ServiceUnavailable):
    """A Flower process of the federation exited, or did not answer, or the run failed."""


def federated_environment() -> Path:
    """The federated environment: ``BASTION_FEDERATED_ENV``, else this one when it holds
    Flower, else ``<this venv>-federated``."""
    chosen = os.environ.get("BASTION_FEDERATED_ENV")
    if chosen:
        root = Path(chosen)
    elif (Path(sys.prefix) / "bin" / "flower-superlink").is_file():  # running in it
        root = Path(sys.prefix)
    else:
        root = Path(sys.prefix + ENV_SUFFIX)
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
    #: The refused keys found so far, and how far the SuperLink's log was read for them.
    _refused: list[bytes] = field(default_factory=list)
    _refused_read: int = 0

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
        folder = self.home / "tls"
        self.tls = made_link(folder) or link_certificates(folder, host=self.host)
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

    def admit_key(self, site: str, public_key: str) -> str:
        """Register a site's SuperNode public key (OpenSSH form) that the site made itself;
        the node id the SuperLink gave it."""
        folder = self.home / "keys"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = folder / f"{site}.pub"
        path.write_text(public_key.strip() + "\n")
        answer = self._flwr("supernode", "register", str(path), CONNECTION, "--name", site)
        return str(answer["node-id"])

    def unregister(self, node_id: str) -> None:
        """Remove a node (a site's earlier key, replaced by the key of its next attempt)."""
        self._flwr("supernode", "unregister", node_id, CONNECTION)

    def nodes(self) -> dict[str, str]:
        """Every registered node's status by node id: ``registered`` (never connected),
        ``online``, ``offline``."""
        answer = self._flwr("supernode", "list", CONNECTION)
        return {str(n["node-id"]): str(n["status"]) for n in answer.get("nodes") or []}

    def start_site(
        self,
        site: SiteData,
        *,
        key: Path | None = None,
        ca: Path | None = None,
        via: str | None = None,
    ) -> None:
        """A site's SuperNode, dialling out to the SuperLink at ``host:port`` over TLS
        (trusting only the federation's CA: this federation's own, or ``ca`` when the link
        runs elsewhere) and authenticating with its key; ``via`` dials another ``HOST:PORT``
        that leads there (a relay that counts the bytes). A node with an unregistered key, or
        with none, is refused by the SuperLink and exits."""
        if ca is None and self.tls is None:
            raise FederationFailed("start the SuperLink before the sites")
        trusted = ca if ca is not None else self.tls.ca  # type: ignore[union-attr]
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        config = f'site="{site.name}" data="{site.data}"'
        signing = ["--auth-supernode-private-key", str(key)] if key is not None else []
        self._start(
            f"site-{site.name}",
            "flower-supernode",
            "--root-certificates",
            str(trusted),
            *signing,
            "--superlink",
            via or f"{self.host}:{self.port}",
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
            "--node-config",
            config,
        )

    def refused_keys(self) -> list[bytes]:
        """The public keys (PEM) of the nodes the SuperLink refused so far, from its log:
        each call reads only the whole lines written since the last (the log grows with
        every request Flower serves)."""
        path = self.home / "logs" / "superlink.log"
        try:
            with path.open("rb") as log:
                log.seek(self._refused_read)
                fresh = log.read()
        except FileNotFoundError:
            return list(self._refused)
        whole = fresh[: fresh.rfind(b"\n") + 1]  # a line being written is read next time
        self._refused_read += len(whole)
        for match in _REFUSED.finditer(whole.decode(errors="replace")):
            with contextlib.suppress(ValueError, SyntaxError):
                key = ast.literal_eval(match.group(1))
                if isinstance(key, bytes) and key not in self._refused:
                    self._refused.append(key)
        return list(self._refused)

    def site_alive(self, name: str) -> None:
        """Raise :class:`FederationFailed` (with its log's tail) once a site's node exited."""
        self._alive(f"site-{name}")

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

    def finished(self, run_id: str, *, output: Path | None, look: int) -> dict[str, Any] | None:
        """The run's status once it finished, else None. Asking Flower is a ``flwr`` command
        (about a second of CPU), so with ``output`` (the plan's folder, where the ServerApp
        writes its last file when it completes) only every tenth ``look`` asks, and the file
        appearing says when to."""
        self._alive("superlink")
        done = output is not None and any((output / name).is_file() for name in FINAL_FILES)
        if output is not None and not done and look % 10 != 9:
            return None
        status = self.status(run_id)
        if str(status.get("status", "")).startswith("finished"):
            return status
        if done:  # the file is written just before the ServerApp returns: ask again shortly
            time.sleep(1.0)
            status = self.status(run_id)
            return status if str(status.get("status", "")).startswith("finished") else None
        return None

    def wait(self, run_id: str, *, timeout: float, output: Path | None = None) -> dict[str, Any]:
        """Wait until the run finished; its last status (``finished:completed`` or not)."""
        deadline, look = time.monotonic() + timeout, 0
        while (status := self.finished(run_id, output=output, look=look)) is None:
            if time.monotonic() > deadline:
                raise FederationFailed(f"the federated run did not finish within {timeout:.0f} s")
            time.sleep(1.0 if output is not None else 3.0)
            look += 1
        return status

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
