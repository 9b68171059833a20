"""CLI cold start: CPU and wall time of `bastion --version` and `bastion run list` (against a
running control plane, logged in), next to `python -c pass` in the same interpreter.

Every command is a fresh process, as a user or a script runs it; CPU is user + system time
of the child (``RUSAGE_CHILDREN``), so waiting on the control plane does not count. The
control plane is a real `bastion server start` (SQLite) on 127.0.0.1 with one project
holding ``--runs`` runs. The floor row imports only the libraries every such verb needs
(Typer, Rich, pydantic, httpx).

    python benchmarks/bench_cli.py [--reps 10] [--runs 20]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

BASTION = str(Path(sys.executable).with_name("bastion"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _control_plane(work: Path, runs: int) -> Iterator[tuple[str, str]]:
    """A running control plane with project ``bench`` (``runs`` runs); its URL and token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env |= {
        "BASTION_HOME": str(work / "server-home"),
        "BASTION_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
    }
    init = subprocess.run(
        [BASTION, "server", "init"], env=env, capture_output=True, text=True, check=True
    )
    lines = init.stdout.splitlines()
    token = next(lines[i + 1] for i, line in enumerate(lines) if "shown once" in line).strip()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (work / "server.log").open("wb")
    server = subprocess.Popen(
        [BASTION, "server", "start", "--port", str(port)], env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the control plane did not start; see {work / 'server.log'}")
            time.sleep(0.2)
        auth = {"authorization": f"Bearer {token}"}
        with httpx.Client(base_url=f"{url}/api/v1", headers=auth, timeout=30) as http:
            http.post("/projects", json={"name": "bench"}).raise_for_status()
            http.post("/clusters", json={"name": "c1"}).raise_for_status()
            spec = {"name": "smoke", "project": "bench", "cluster": "c1", "job": {"type": "smoke"}}
            for _ in range(runs):
                http.post("/projects/bench/runs", json=spec).raise_for_status()
        yield url, token
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _measure(argv: list[str], env: dict[str, str], reps: int) -> tuple[float, float]:
    """Median CPU seconds (user + system) and median wall seconds of ``argv``, run ``reps``
    times."""
    cpu, wall = [], []
    for _ in range(reps):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        wall.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()[-500:]}")
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(cpu), statistics.median(wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        work = Path(tmp)
        with _control_plane(work, args.runs) as (url, token):
            env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
            env["BASTION_HOME"] = str(work / "user-home")
            subprocess.run(
                [BASTION, "login", "--url", url, "--token", token],
                env=env,
                capture_output=True,
                check=True,
            )
            cases = [
                ("python -c pass", [sys.executable, "-c", "pass"]),
                (
                    "the libraries alone (floor)",
                    [sys.executable, "-c", "import typer, rich.console, pydantic, httpx"],
                ),
                ("bastion --version", [BASTION, "--version"]),
                ("bastion run list -p bench", [BASTION, "run", "list", "-p", "bench"]),
                (
                    "bastion run list -p bench -o json",
                    [BASTION, "run", "list", "-p", "bench", "-o", "json"],
                ),
            ]
            results = {name: _measure(argv, env, args.reps) for name, argv in cases}
    print(f"median of {args.reps} cold starts each; {args.runs} runs listed")
    print(f"{'command':<36} {'CPU s':>7} {'wall s':>7}")
    for name, (cpu, wall) in results.items():
        print(f"{name:<36} {cpu:>7.3f} {wall:>7.3f}")
    floor = results["python -c pass"][0]
    listed = results["bastion run list -p bench"][0]
    print(f"run list CPU above the interpreter's own start: {listed - floor:.3f} s")
    libraries = results["the libraries alone (floor)"][0]
    print(
        f"of which importing Typer, Rich, pydantic and httpx alone: {libraries - floor:.3f} s "
        "(the floor for any verb that talks to the control plane)"
    )
    print(f"ratio run-list CPU / python -c pass CPU: {listed / floor:.2f}x")


if __name__ == "__main__":
    main()
