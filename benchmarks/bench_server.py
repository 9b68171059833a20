"""Control-plane throughput: an authenticated read and an audited write, SQLite and PostgreSQL,
against a bare FastAPI endpoint returning the same JSON with no auth and no audit (the ceiling).

Each server is a real uvicorn process on 127.0.0.1 (one worker); the load comes from
``--threads`` keep-alive httpx clients in this process. The authenticated read is
``GET /api/v1/projects/{project}`` (token check, role lookup, project row); the
audited write is ``POST /api/v1/projects/{project}/runs/{id}/metrics`` (token
check, role lookup, insert and its chained audit event in one transaction).

    python benchmarks/bench_server.py [--requests 2000] [--threads 4] [--reps 3] [--no-postgres]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from bastion.config import Settings
from bastion.db import scratch_schema
from bastion.security.keys import load_keyring

PG_URL = os.environ.get(
    "BASTION_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

BARE_APP = """
from fastapi import FastAPI
app = FastAPI()
PAYLOAD = {payload!r}
@app.get("/bare")
async def bare() -> dict:
    return PAYLOAD
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], health: str) -> Iterator[None]:
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(health)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


def _load(
    url: str,
    *,
    method: str,
    body: Callable[[int], dict[str, object]] | None,
    headers: dict[str, str],
    requests: int,
    threads: int,
) -> float:
    """Requests per second over ``requests`` calls spread across ``threads`` clients."""
    per_thread = requests // threads
    errors: list[str] = []

    def worker(offset: int) -> None:
        with httpx.Client(headers=headers, timeout=30) as client:
            for i in range(per_thread):
                payload = body(offset * per_thread + i) if body else None
                response = client.request(method, url, json=payload)
                if response.status_code >= 300:
                    errors.append(f"{response.status_code} {response.text[:200]}")
                    return

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{url}: {errors[0]}")
    return per_thread * threads / elapsed


def _bastion_env(home: Path, db: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    return {
        **env,
        "BASTION_HOME": str(home),
        "BASTION_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
        "BASTION_CONTROL_PLANE_DATABASE_URL": db,
    }


@contextlib.contextmanager
def _bastion_server(
    db: str, work: Path
) -> Iterator[tuple[str, dict[str, str], str, dict[str, str]]]:
    """A running Bastion control plane with a project, a run and a job token."""
    bastion = str(Path(sys.executable).with_name("bastion"))
    env = _bastion_env(work / f"home-{uuid.uuid4().hex[:6]}", db)
    init = subprocess.run(
        [bastion, "server", "init"], env=env, capture_output=True, text=True, check=True
    )
    lines = init.stdout.splitlines()
    token = next(lines[i + 1] for i, line in enumerate(lines) if "shown once" in line).strip()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    auth = {"authorization": f"Bearer {token}"}
    with _process([bastion, "server", "start", "--port", str(port)], env, f"{base}/healthz"):
        httpx.post(
            f"{base}/api/v1/projects", json={"name": "bench"}, headers=auth
        ).raise_for_status()
        run_id, job_token = _leased_run(base, auth, work)
        yield base, auth, run_id, {"authorization": f"Bearer {job_token}"}


def _leased_run(base: str, auth: dict[str, str], work: Path) -> tuple[str, str]:
    """A run leased by a joined agent, and its job token: metrics are written by a job, on
    a run its token is bound to, as a real job reports them (through its agent's relay)."""

    def post(path: str, body: object, headers: dict[str, str]) -> dict[str, object]:
        answer = httpx.post(f"{base}{path}", json=body, headers=headers, timeout=30)
        answer.raise_for_status()
        return dict(answer.json()) if answer.content else {}

    join_token = post("/api/v1/clusters", {"name": "c1"}, auth)["join_token"]
    keys = load_keyring(Settings(home=work / f"agent-{uuid.uuid4().hex[:6]}", master_key=None))
    joined = post(
        "/api/v1/agents/join",
        {
            "cluster": "c1",
            "join_token": join_token,
            "signing_public_key": keys.primary_signing_key().public_pem.decode(),
            "hybrid_public_keyset": keys.hybrid_public_keyset(),
        },
        {},
    )
    spec = {"name": "r", "project": "bench", "cluster": "c1", "job": {"type": "smoke"}}
    run = post("/api/v1/projects/bench/runs", spec, auth)
    agent = {"authorization": f"Bearer {joined['token']}"}
    lease = post("/api/v1/clusters/c1/lease?wait=0", {}, agent)
    if lease.get("run_id") != run["id"]:
        raise RuntimeError(f"the agent did not lease the benchmark's run: {lease}")
    return str(run["id"]), str(lease["job_token"])


@contextlib.contextmanager
def _bare_server(payload: dict[str, object], work: Path) -> Iterator[str]:
    module = work / "bare_app.py"
    module.write_text(BARE_APP.format(payload=payload))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(work)}
    cmd = [sys.executable, "-m", "uvicorn", "bare_app:app", "--port", str(port)]
    cmd += ["--log-level", "warning", "--no-server-header"]
    with _process(cmd, env, f"{base}/bare"):
        yield f"{base}/bare"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    load = {"requests": args.requests, "threads": args.threads}
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bastion-bench-")))
        databases = {"sqlite": f"sqlite:///{work / 'cp.db'}"}
        if not args.no_postgres:
            databases["postgresql"] = stack.enter_context(
                scratch_schema(PG_URL, prefix="bastion_bench")
            )
        servers = {
            db: stack.enter_context(_bastion_server(url, work)) for db, url in databases.items()
        }
        base, auth, _, _ = servers["sqlite"]
        payload = httpx.get(f"{base}/api/v1/projects/bench", headers=auth).json()
        bare_url = stack.enter_context(_bare_server(payload, work))
        # Interleave the measurements in every repetition so machine noise hits all alike.
        bare: list[float] = []
        reads: dict[str, list[float]] = {db: [] for db in servers}
        writes: dict[str, list[float]] = {db: [] for db in servers}
        ratios: dict[str, list[float]] = {db: [] for db in servers}
        for _ in range(args.reps):
            bare.append(_load(bare_url, method="GET", body=None, headers={}, **load))
            for db, (base, auth, run_id, job) in servers.items():
                reads[db].append(
                    _load(
                        f"{base}/api/v1/projects/bench",
                        method="GET",
                        body=None,
                        headers=auth,
                        **load,
                    )
                )
                ratios[db].append(reads[db][-1] / bare[-1])
                writes[db].append(
                    _load(
                        f"{base}/api/v1/projects/bench/runs/{run_id}/metrics",
                        method="POST",
                        body=lambda i: {"name": "loss", "step": i, "value": 1.0 / (i + 1)},
                        headers=job,
                        requests=args.requests // 2,
                        threads=args.threads,
                    )
                )
    ceiling = statistics.median(bare)
    print(f"server: {args.requests} requests, {args.threads} clients, median of {args.reps} runs")
    print(f"  bare FastAPI endpoint, same JSON, no auth/audit: {ceiling:8.0f} req/s (ceiling)")
    print("  target: authenticated read >= 0.70 of the bare endpoint")
    for db in servers:
        read, write = statistics.median(reads[db]), statistics.median(writes[db])
        ratio = statistics.median(ratios[db])
        print(f"  [{db}] audited write:      {write:8.0f} req/s  ratio {write / ceiling:.2f}")
        print(f"  [{db}] authenticated read: {read:8.0f} req/s  ratio to bare {ratio:.2f}")


if __name__ == "__main__":
    main()
