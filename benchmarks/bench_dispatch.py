"""Dispatch: time from submit to running, and smoke runs per minute, through `bastion up`.

Bastion side: a control plane and a local agent (``bastion up``, local executor, 2 jobs
at once); each run is leased by long-poll, gets its own working directory, job token
and process, and reports its stages. Baseline: the same number of bare Python
processes started 2 at a time with no control plane (the floor for a
process-per-job executor). The Ray executor is not measured yet.

    python benchmarks/bench_dispatch.py [--runs 200] [--latency-samples 10]
"""

from __future__ import annotations

import argparse
import json
import os
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
        status = str(admin.get_run("demo", run_id)["status"])
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--latency-samples", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bastion-bench-dispatch-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
        env["BASTION_HOME"] = str(Path(tmp) / "home")
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        bastion = str(Path(sys.executable).with_name("bastion"))
        up = subprocess.Popen(
            [bastion, "up", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_healthy(url)
            token = json.loads((Path(tmp) / "home" / "credentials.json").read_text())["token"]
            with Client(url, token=token) as admin:
                latencies = []
                for _ in range(args.latency_samples):  # one at a time, on an idle agent
                    submitted = time.perf_counter()
                    run = admin.submit_run(SMOKE)
                    _wait(admin, run["id"], {"running", "succeeded", "failed"})
                    latencies.append(time.perf_counter() - submitted)
                    _wait(admin, run["id"], {"succeeded", "failed"})
                started = time.perf_counter()
                ids = [admin.submit_run(SMOKE)["id"] for _ in range(args.runs)]
                outcomes = [
                    _wait(admin, run_id, {"succeeded", "failed", "cancelled"}) for run_id in ids
                ]
                elapsed = time.perf_counter() - started
        finally:
            up.send_signal(signal.SIGINT)
            up.wait(timeout=60)
    per_minute = args.runs / elapsed * 60
    floor = _baseline(args.runs, 2)
    failed = sum(outcome != "succeeded" for outcome in outcomes)
    print(f"dispatch: {args.runs} smoke runs, local executor, 2 jobs at once")
    latency_ms = statistics.median(latencies) * 1000
    print(f"  submit -> running (median of {args.latency_samples}): {latency_ms:.0f} ms")
    print(f"  bastion: {per_minute:.0f} runs/minute ({failed} not succeeded)")
    print(f"  bare `python -c pass` processes, 2 at a time: {floor:.0f} /minute")
    print(f"  ratio bastion/bare processes: {per_minute / floor:.2f}")


if __name__ == "__main__":
    main()
