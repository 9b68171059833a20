"""Dispatch: time from submit to running, and smoke runs per minute, through `bastion up`.

Bastion side: a control plane and one agent (``bastion up``, 2 jobs at once) with the
local executor and, where a Ray head can be started, the Ray executor; each run is
leased by long-poll, gets its own working directory, job token and process, and
reports its stages. Baseline: the same number of bare Python processes started 2 at
a time with no control plane (the floor for a process-per-job executor).

Ray advertises the host's primary address, so the Ray measurement runs in a private
network namespace with only loopback (needs root and iproute2; skipped otherwise).

    python benchmarks/bench_dispatch.py [--runs 200] [--latency-samples 10] [--no-ray]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bastion.client import Client

SMOKE = {
    "name": "bench",
    "project": "demo",
    "cluster": "local",
    "job": {"type": "smoke", "steps": 1},
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError("bastion up did not come up")


def _wait(admin: Client, run_id: str, statuses: set[str]) -> str:
    while True:
        status = admin.get_run("demo", run_id).status
        if status in statuses:
            return status
        time.sleep(0.02)


def _baseline(runs: int, parallel: int) -> float:
    """Runs per minute for bare `python -c pass` processes, `parallel` at a time."""
    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(
            pool.map(
                lambda _: subprocess.run([sys.executable, "-c", "pass"], check=True), range(runs)
            )
        )
    return runs / (time.perf_counter() - started) * 60


def measure(
    args: argparse.Namespace, *, executor: str, ray_address: str | None
) -> dict[str, float]:
    """Run the measurement against a fresh `bastion up`; return the figures."""
    with tempfile.TemporaryDirectory(prefix="bdisp-", dir="/tmp") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
        env["BASTION_HOME"] = str(Path(tmp) / "home")
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        bastion = str(Path(sys.executable).with_name("bastion"))
        command = [bastion, "up", "--port", str(port), "--executor", executor]
        if ray_address:
            command += ["--ray-address", ray_address]
        up = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            _wait_healthy(url)
            token = json.loads((Path(tmp) / "home" / "credentials.json").read_text())["token"]
            with Client(url, token=token) as admin:
                latencies = []
                for _ in range(args.latency_samples):  # one at a time, on an idle agent
                    submitted = time.perf_counter()
                    run = admin.submit_run(SMOKE)
                    _wait(admin, run.id, {"running", "succeeded", "failed"})
                    latencies.append(time.perf_counter() - submitted)
                    _wait(admin, run.id, {"succeeded", "failed"})
                started = time.perf_counter()
                ids = [admin.submit_run(SMOKE).id for _ in range(args.runs)]
                outcomes = [
                    _wait(admin, run_id, {"succeeded", "failed", "cancelled"}) for run_id in ids
                ]
                elapsed = time.perf_counter() - started
        finally:
            up.send_signal(signal.SIGINT)
            up.wait(timeout=60)
    return {
        "latency_ms": statistics.median(latencies) * 1000,
        "per_minute": args.runs / elapsed * 60,
        "failed": float(sum(outcome != "succeeded" for outcome in outcomes)),
    }


RAY_PORT = 6398


def _measure_ray_in_namespace(args: argparse.Namespace) -> dict[str, float] | None:
    """Start a token-authenticated Ray head in a loopback-only namespace and measure there."""
    if shutil.which("ip") is None or importlib.util.find_spec("ray") is None:
        return None
    name = f"bdisp-{os.getpid()}"
    if subprocess.run(["ip", "netns", "add", name], capture_output=True, check=False).returncode:
        return None
    tmp = Path(tempfile.mkdtemp(prefix="bray", dir="/tmp"))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    inside = ["ip", "netns", "exec", name]
    ray = str(Path(sys.executable).with_name("ray"))
    try:
        subprocess.run([*inside, "ip", "link", "set", "lo", "up"], check=True)
        subprocess.run(
            [
                *inside,
                ray,
                "start",
                "--head",
                f"--port={RAY_PORT}",
                "--num-cpus=2",
                "--include-dashboard=false",
                "--disable-usage-stats",
                f"--temp-dir={tmp / 'r'}",
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        result = subprocess.run(
            [
                *inside,
                sys.executable,
                __file__,
                "--inside-ray",
                f"127.0.0.1:{RAY_PORT}",
                "--runs",
                str(args.runs),
                "--latency-samples",
                str(args.latency_samples),
            ],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
        return figures
    finally:
        subprocess.run([*inside, ray, "stop", "--force"], env=env, capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", name], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--latency-samples", type=int, default=10)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--inside-ray", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside_ray:  # re-executed inside the namespace: print the figures as JSON
        print(json.dumps(measure(args, executor="ray", ray_address=args.inside_ray)))
        return
    results = {"local": measure(args, executor="local", ray_address=None)}
    if not args.no_ray:
        ray_figures = _measure_ray_in_namespace(args)
        if ray_figures is not None:
            results["ray"] = ray_figures
    floor = _baseline(args.runs, 2)
    print(f"dispatch: {args.runs} smoke runs, 2 jobs at once")
    print(f"  bare `python -c pass` processes, 2 at a time: {floor:.0f} /minute (floor)")
    for executor, figures in results.items():
        print(
            f"  [{executor}] submit -> running (median of {args.latency_samples}): "
            f"{figures['latency_ms']:.0f} ms"
        )
        print(
            f"  [{executor}] {figures['per_minute']:.0f} runs/minute "
            f"({figures['failed']:.0f} not succeeded); ratio to the floor "
            f"{figures['per_minute'] / floor:.2f}"
        )
    if "ray" not in results and not args.no_ray:
        print("  [ray] skipped: needs root, iproute2 and the 'ray' extra")


if __name__ == "__main__":
    main()
