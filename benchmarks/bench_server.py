"""Control-plane throughput: authenticated reads, with one token and with a different token per
request, and audited writes, on SQLite and PostgreSQL, against a bare FastAPI endpoint that
returns the same JSON with no auth and no audit (the ceiling).

Every server is a real uvicorn process on 127.0.0.1 (``bastion server start``, one worker, or
``uvicorn`` for the bare app). The load comes from outside this process and outside the
servers (``benchmarks/loadgen.py``: ``wrk`` with a Lua script when installed, else one Python
generator process per core), on ``--connections`` keep-alive connections for ``--seconds``.

* bare: ``GET /bare``, the project's JSON, no security.
* read, one token: ``GET /api/v1/projects/{project}`` with the admin's token (token check,
  role lookup, project row); the 2 s credential cache answers all but the first lookup.
* read, distinct tokens: the same with ``--tokens`` tokens of the admin's, a different one
  each request in turn, so a token comes back only after ``--tokens`` requests: when that is
  longer than the cache's 2 s, every request resolves its credential in the database (the
  report prints the interval, and says when it was shorter).
* audited write: ``POST /api/v1/projects/{project}/runs/{id}/metrics`` with the job token of
  a leased run (token check, insert and its chained audit event in one transaction); the
  metrics stored afterwards are checked against the answers.

The sides alternate in every repetition, so drift on the host hits them alike; figures are
medians of ``--reps``.

    python benchmarks/bench_server.py [--seconds 3] [--connections 1 16] [--reps 3]
        [--tokens 2000] [--no-postgres] [--generator auto]
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
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

import loadgen
from bastion.config import Settings
from bastion.db import scratch_schema
from bastion.security.keys import load_keyring
from loadgen import Load, Point, Requests

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


def _bastion_env(home: Path, db: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    return {
        **env,
        "BASTION_HOME": str(home),
        "BASTION_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
        "BASTION_CONTROL_PLANE_DATABASE_URL": db,
    }


@dataclass(frozen=True)
class Server:
    """A running control plane: a project, a run leased by a joined agent, tokens."""

    port: int
    admin: str
    tokens: tuple[str, ...]
    run_id: str
    job_token: str

    def requests(self) -> dict[str, Requests]:
        """What is measured on this server, by name."""
        project = "/api/v1/projects/bench"
        steps = tuple(
            f'{{"name": "loss", "step": {i}, "value": {1 / (i + 1)!r}}}' for i in range(1000)
        )
        return {
            "read, one token": Requests("GET", project, tokens=(self.admin,)),
            "read, distinct tokens": Requests("GET", project, tokens=self.tokens),
            "audited write": Requests(
                "POST",
                f"{project}/runs/{self.run_id}/metrics",
                bodies=steps,
                tokens=(self.job_token,),
            ),
        }


@contextlib.contextmanager
def _bastion_server(db: str, work: Path, *, tokens: int) -> Iterator[Server]:
    """A running Bastion control plane on ``db`` with a project, a leased run, ``tokens``
    tokens of the admin's and the job token of the run."""
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
        with httpx.Client(base_url=base, headers=auth, timeout=30) as client:
            made = []
            for n in range(tokens):
                answer = client.post("/api/v1/tokens", json={"name": f"bench-{n}"})
                answer.raise_for_status()
                made.append(str(answer.json()["token"]))
        yield Server(port, token, tuple(made), run_id, job_token)


def _stored_metrics(server: Server) -> int:
    answer = httpx.get(
        f"http://127.0.0.1:{server.port}/api/v1/projects/bench/runs/{server.run_id}/metrics",
        headers={"authorization": f"Bearer {server.admin}"},
        timeout=60,
    )
    answer.raise_for_status()
    return len(answer.json())


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
def _bare_server(payload: dict[str, object], work: Path) -> Iterator[int]:
    module = work / "bare_app.py"
    module.write_text(BARE_APP.format(payload=payload))
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(work)}
    cmd = [sys.executable, "-m", "uvicorn", "bare_app:app", "--port", str(port)]
    cmd += ["--log-level", "warning", "--no-server-header", "--no-access-log"]
    with _process(cmd, env, f"http://127.0.0.1:{port}/bare"):
        yield port


#: database -> measurement -> connections -> one point per repetition
Results = dict[str, dict[str, dict[int, list[Point]]]]
#: The credential cache's lifetime (``auth_cache_seconds``' default).
CACHE_SECONDS = 2.0


def _measure(
    load: Load,
    servers: dict[str, Server],
    bare: int,
    *,
    connections: list[int],
    reps: int,
    seconds: float,
) -> Results:
    results: Results = {}
    plain = Requests("GET", "/bare")
    measured = {db: server.requests() for db, server in servers.items()}
    for db, server in servers.items():  # connections and first requests, not measured
        for requests in measured[db].values():
            load.drive(port=server.port, requests=requests, connections=1, seconds=1)
    for clients in connections:
        for _ in range(reps):
            point = load.drive(port=bare, requests=plain, connections=clients, seconds=seconds)
            results.setdefault("bare", {}).setdefault("bare", {}).setdefault(clients, []).append(
                point
            )
            for db, server in servers.items():
                for name, requests in measured[db].items():
                    point = load.drive(
                        port=server.port, requests=requests, connections=clients, seconds=seconds
                    )
                    results.setdefault(db, {}).setdefault(name, {}).setdefault(clients, []).append(
                        point
                    )
    return results


def _problems(results: Results, servers: dict[str, Server]) -> list[str]:
    """Failed requests, and stored metrics that do not match the writes answered."""
    found = []
    for db, by_name in results.items():
        for name, by_clients in by_name.items():
            for clients, points in by_clients.items():
                failed = sum(p.failed for p in points)
                if failed:
                    found.append(f"{db} {name} at {clients}: {failed} failed")
    for db, server in servers.items():
        writes = [p for by in results[db]["audited write"].values() for p in by]
        answered = sum(p.answered - p.failed for p in writes)
        sent = sum(p.sent for p in writes) + 1000  # + the warm-up's (at most one second's)
        stored = _stored_metrics(server)
        if not answered <= stored <= sent:
            found.append(f"{db}: {stored} metrics stored for {answered} writes answered")
    return found


def _report(
    results: Results, servers: dict[str, Server], *, load: Load, args: argparse.Namespace
) -> None:
    print(
        f"control plane, one uvicorn worker each; load: {load.name}; {args.seconds:g} s per "
        f"point, median of {args.reps}; {args.tokens} distinct tokens"
    )
    print(
        f"{'clients':>7}  {'server':<11} {'measurement':<22} {'req/s':>7} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'ratio':>6}"
    )
    notes = []
    for clients in args.connections:
        ceiling = statistics.median(p.rate for p in results["bare"]["bare"][clients])
        for db in ["bare", *servers]:
            for name, by_clients in results[db].items():
                points = by_clients[clients]
                rate = statistics.median(p.rate for p in points)
                p50 = statistics.median(p.p50_ms for p in points)
                p99 = statistics.median(p.p99_ms for p in points)
                print(
                    f"{clients:>7}  {db:<11} {name:<22} {rate:>7.0f} {p50:>8.2f} {p99:>8.2f} "
                    f"{rate / ceiling:>6.2f}"
                )
                if name == "read, distinct tokens" and args.tokens / rate < CACHE_SECONDS:
                    notes.append(
                        f"{db} at {clients}: a token came back every {args.tokens / rate:.2f} s, "
                        f"within the cache's {CACHE_SECONDS:g} s (pass more --tokens)"
                    )
    for note in notes:
        print(f"  note: {note}")
    if problems := _problems(results, servers):
        raise SystemExit(
            "the figures above do not measure the control plane: " + "; ".join(problems)
        )
    clients = max(args.connections)
    db = "sqlite"
    ceiling = statistics.median(p.rate for p in results["bare"]["bare"][clients])
    read = statistics.median(p.rate for p in results[db]["read, distinct tokens"][clients])
    print(
        f"ratio to bare, authenticated read with distinct tokens, {db}, {clients} "
        f"connection{'s' * (clients != 1)}: {read / ceiling:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument(
        "--generator",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="auto: wrk when it is installed, else Python generator processes",
    )
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bastion-bench-")))
        load = loadgen.choose(args.generator, work, stack)
        databases = {"sqlite": f"sqlite:///{work / 'cp.db'}"}
        if not args.no_postgres:
            databases["postgresql"] = stack.enter_context(
                scratch_schema(PG_URL, prefix="bastion_bench")
            )
        servers = {
            db: stack.enter_context(_bastion_server(url, work, tokens=args.tokens))
            for db, url in databases.items()
        }
        sqlite = servers["sqlite"]
        payload = httpx.get(
            f"http://127.0.0.1:{sqlite.port}/api/v1/projects/bench",
            headers={"authorization": f"Bearer {sqlite.admin}"},
        ).json()
        bare = stack.enter_context(_bare_server(payload, work))
        results = _measure(
            load, servers, bare, connections=args.connections, reps=args.reps, seconds=args.seconds
        )
        _report(results, servers, load=load, args=args)


if __name__ == "__main__":
    main()
