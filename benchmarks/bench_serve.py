"""The inference server's cost: a deployment the agent started versus a bare endpoint, one run.

Bastion side, as an operator runs it: a control plane (``bastion server start``, SQLite) and
one agent (``bastion agent start``, local executor, every job in bubblewrap) on loopback. A
job registers the patients reference table from the agent's import root, another trains the
patients MLP (128-64) on it; the version is promoted to production and deployed through the
deployment API (what ``bastion deploy create`` calls) with 1, then 2 replicas sharing one
port, their limits in Redis. Each replica is the agent's serve job: signed-model check at
start, serving keys refreshed from the control plane, token bucket in Redis, schema
validation, Mahalanobis OOD detection, PRADA extraction tracking, drift monitoring, rounded
output, and an audit event per request, sent in batches to the control plane, which chains
them into its audit log. Every measurement has a serving key of its own (rate and quota far
above the load): the control plane's signed audit export then tells how many events it
received for that measurement's requests, per request answered. An event is queued before
its answer goes out; wrk stops with a request in flight on each connection ("cut off"),
which the server may have audited too, so the events lie between the answers and the
requests sent (checked; the figure can exceed 1 by up to the share cut off).

Baseline: a bare FastAPI + uvicorn endpoint in its own process that loads the same weights
(opened from the agent's sealed store) and answers with the same parsing, preprocessing and
response class, with no security at all.

Load: ``wrk`` (one thread, a Lua script) when it is installed, else one generator process per
core (asyncio over raw keep-alive connections, every answer awaited: nothing is cut off).
Every request carries one patients row, the rows taken in turn, as the same bytes to both
servers. At each concurrency the sides alternate ``--reps`` times for ``--seconds`` each; the
figures are medians. Needs bubblewrap and Redis.

Also reported, per answer: the CPU time (from /proc) of the serving processes (the
replicas, or the bare endpoint), the agent (which relays the audit batches), the control
plane (which chains them) and the load generator.

    python benchmarks/bench_serve.py [--reps 3] [--seconds 5] [--concurrency 1 16 64]
        [--replicas 1 2] [--redis-url redis://127.0.0.1:6379/0] [--generator auto]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

# At module level: FastAPI reads the bare endpoint's annotations from this module's globals.
from fastapi import Request
from fastapi.responses import JSONResponse

import loadgen
from loadgen import Load, Point, Requests, cpu_seconds

if TYPE_CHECKING:
    from bastion.client import Client, RunOut

PROJECT, CLUSTER, MODEL = "bench", "c1", "patients-mlp"
TRAIN: dict[str, Any] = {
    "name": MODEL,
    "project": PROJECT,
    "cluster": CLUSTER,
    "dataset": "patients@1",
    "model": {"builtin": "mlp", "hidden": [128, 64]},
    "train": {"epochs": 5, "batch_size": 64, "lr": 0.1},
}
#: Far above what one host can send: the token bucket and the quota never refuse.
KEY_LIMITS: dict[str, Any] = {"rate": 1_000_000.0, "burst": 10_000_000, "quota": 10_000_000_000}
#: The ratio printed last: at this concurrency (or the nearest measured), one replica.
HEADLINE_CLIENTS = 16
#: More failed requests than this share and the figures measure errors, not serving.
MAX_FAILED = 0.01
BASTION = str(Path(sys.executable).with_name("bastion"))
T = TypeVar("T")


# -- processes ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    return {**env, "BASTION_HOME": str(home)}


def _until(what: str, found: Callable[[], T | None], *, seconds: float = 300) -> T:
    deadline = time.monotonic() + seconds
    while (value := found()) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up after {seconds:.0f} s waiting for {what}")
        time.sleep(0.25)
    return value


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited ({self.process.returncode}):\n{tail}")

    def answers(self, url: str) -> bool | None:
        self.alive()
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(url, timeout=2).status_code < 500 or None
        return None


@contextlib.contextmanager
def _process(name: str, args: list[str], *, env: dict[str, str], log: Path) -> Iterator[Child]:
    """Run ``args`` (its output to ``log``) for the block."""
    with log.open("ab") as sink:
        process = subprocess.Popen(args, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        yield Child(name, process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


# -- the control plane, its agent and the model --------------------------------------------


@dataclass
class Plane:
    admin: Client
    storage: Path
    agent_home: Path
    incoming: Path
    server: Child
    agent: Child


@contextlib.contextmanager
def _plane(work: Path) -> Iterator[Plane]:
    """A control plane and one agent of cluster c1, each its own process, on loopback."""
    from bastion.client import Client

    server_env = _env(work / "server")
    init = subprocess.run(
        [BASTION, "server", "init"], env=server_env, capture_output=True, text=True, check=True
    )
    lines = init.stdout.splitlines()
    token = next(lines[i + 1] for i, line in enumerate(lines) if "shown once" in line).strip()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    incoming = work / "incoming"
    incoming.mkdir()
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(
            _process(
                "the control plane",
                [BASTION, "server", "start", "--port", str(port)],
                env=server_env,
                log=work / "server.log",
            )
        )
        _until("the control plane", lambda: server.answers(f"{url}/healthz"))
        admin = stack.enter_context(Client(url, token=token))
        admin.create_project(PROJECT)
        join = admin.create_cluster(CLUSTER).join_token
        agent = stack.enter_context(
            _process(
                "the agent",
                [
                    BASTION,
                    "agent",
                    "start",
                    "--cluster",
                    CLUSTER,
                    "--control-plane",
                    url,
                    "--storage",
                    str(work / "storage"),
                    "--import-root",
                    str(incoming),
                ],
                env={**_env(work / "agent"), "BASTION_JOIN_TOKEN": join},
                log=work / "agent.log",
            )
        )

        def heartbeat() -> bool | None:
            agent.alive()
            return any(c.last_heartbeat for c in admin.list_clusters()) or None

        _until("the agent's first heartbeat", heartbeat)
        yield Plane(admin, work / "storage", work / "agent", incoming, server, agent)


def _succeeded(admin: Client, run: RunOut, what: str) -> None:
    def ended() -> RunOut | None:
        now = admin.get_run(PROJECT, run.id)
        return now if now.status in ("succeeded", "failed", "cancelled") else None

    final = _until(what, ended, seconds=600)
    if final.status != "succeeded":
        raise RuntimeError(f"{what}: run {run.id} {final.status}: {final.status_reason}")


def _production_model(plane: Plane) -> str:
    """Register patients, train the MLP on it, promote it; the version's manifest hash."""
    from bastion.data.reference import patients

    admin = plane.admin
    source = plane.incoming / "patients.csv"
    patients(seed=0).to_csv(source, index=False)
    registered = admin.register_dataset(
        PROJECT,
        "patients",
        cluster=CLUSTER,
        source=str(source),
        target="diagnosis",
        subject_id_column="subject_id",
    )
    _succeeded(admin, registered, "registering patients")
    _succeeded(admin, admin.submit_run(TRAIN), f"training {MODEL}")
    admin.put_policy(
        PROJECT, "production", {"min_accuracy": 0.5, "require_signature": True, "approvals": 0}
    )
    approval = admin.promote_model(PROJECT, MODEL, 1, to="production")
    if approval.status != "approved":
        raise RuntimeError(f"{MODEL}@1 was not promoted: {approval.gate_results}")
    return str(admin.model_version(PROJECT, MODEL, 1).manifest_hash)


def _open_model(plane: Plane, manifest_hash: str, into: Path) -> None:
    """Verify and decrypt the stored version with the agent's keys, as it stages a job's."""
    from bastion.config import Settings
    from bastion.security.keys import load_keyring
    from bastion.security.sealed import open_sealed

    open_sealed(
        plane.storage,
        keyring=load_keyring(Settings(home=plane.agent_home, master_key=None)),
        artifact="model",
        project=PROJECT,
        name=MODEL,
        manifest_hash=manifest_hash,
        into=into,
    )


@contextlib.contextmanager
def _deployment(plane: Plane, *, replicas: int, redis_url: str) -> Iterator[tuple[str, int]]:
    """The production version served by the agent; yields its name and port."""
    admin = plane.admin
    name, port = f"mlp-x{replicas}", _free_port()
    admin.create_deployment(
        PROJECT,
        name=name,
        model=f"{MODEL}@1",
        cluster=CLUSTER,
        port=port,
        replicas=replicas,
        redis_url=redis_url,
    )

    def running() -> bool | None:
        state = admin.get_deployment(PROJECT, name)
        if state.status in ("failed", "cancelled", "stopped"):
            raise RuntimeError(f"deployment {name} {state.status}: {state.status_reason}")
        return state.status == "running" or None

    def closed() -> bool | None:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
        except httpx.TransportError:
            return True
        return None

    try:
        _until(f"deployment {name} to serve", running)
        yield name, port
    finally:
        admin.stop_deployment(PROJECT, name)
        _until(f"deployment {name} to stop listening", closed, seconds=60)


# -- the bare endpoint (a child process) --------------------------------------------------


def _serve_bare(folder: Path, port: int) -> None:
    import torch
    import uvicorn
    from fastapi import FastAPI

    from bastion.train.models import load_packaged

    model, prep = load_packaged(folder, f"{MODEL}@1")
    model.eval()
    app = FastAPI()

    @app.post("/v1/predict")
    async def predict(request: Request) -> JSONResponse:
        # The same parsing, preprocessing and response class as Bastion's; nothing else.
        body = json.loads(await request.body())
        x = prep.row_features(body["instances"])
        with torch.inference_mode():
            probabilities = torch.softmax(model(x), dim=1).tolist()
        predictions = [dict(zip(prep.classes, row, strict=True)) for row in probabilities]
        return JSONResponse({"predictions": predictions})

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- the load -----------------------------------------------------------------------------


def _bodies() -> tuple[str, ...]:
    """One request body per patients row (the features only)."""
    from bastion.data.reference import PATIENT_PII_COLUMNS, patients

    frame = patients(seed=0).drop(columns=[*PATIENT_PII_COLUMNS, "diagnosis"])
    return tuple(json.dumps({"instances": [row]}) for row in frame.to_dict(orient="records"))


# -- the measurement ----------------------------------------------------------------------


def _audited(admin: Client) -> Counter[str]:
    """Prediction events in the control plane's audit log (its signed export), by key."""
    lines = admin.response("GET", "/api/v1/audit/export").text.splitlines()[1:]  # 1: the head
    events = (json.loads(line) for line in lines)
    return Counter(
        str(e["details"].get("key_id")) for e in events if e["action"] == "serve.request"
    )


def _received(admin: Client, answered: dict[str, int]) -> Counter[str]:
    """The events for these keys once there is one per answer, or once none came for 5 s."""
    last: Counter[str] = Counter()
    quiet_since = time.monotonic()
    while True:
        counts = _audited(admin)
        if all(counts[key] >= n for key, n in answered.items()):
            return counts
        if counts != last:
            last, quiet_since = counts, time.monotonic()
        elif time.monotonic() - quiet_since > 5:
            return counts
        time.sleep(0.5)


def _drive(
    load: Load,
    roles: dict[str, list[int]],
    *,
    port: int,
    requests: Requests,
    clients: int,
    seconds: float,
) -> Point:
    """One measurement, with the CPU each role's processes and the load generator used."""

    def used() -> dict[str, float]:
        return {role: cpu_seconds(pids) for role, pids in roles.items()} | {
            "load": load.cpu_seconds()
        }

    before = used()
    point = load.drive(port=port, requests=requests, connections=clients, seconds=seconds)
    after = used()
    per_answer = {r: (after[r] - before[r]) * 1000 / max(1, point.answered) for r in after}
    return replace(point, cpu_ms=per_answer)


#: server -> clients -> one point per repetition
Results = dict[str, dict[int, list[Point]]]


@dataclass(frozen=True)
class Plan:
    concurrency: list[int]
    reps: int
    seconds: float


def _measure(
    plane: Plane,
    load: Load,
    plan: Plan,
    *,
    label: str,
    deployment: tuple[str, int],
    bare: tuple[Child, int],
    bodies: tuple[str, ...],
    results: Results,
) -> None:
    """Alternate the deployment and the bare endpoint at every concurrency; add the points to
    ``results``, the deployment's with the audit events the control plane received for each."""
    from bastion.inference.runner import KEY_REFRESH_SECONDS

    admin = plane.admin
    name, port = deployment

    def key(purpose: str) -> tuple[str, str]:
        made = admin.create_serving_key(
            PROJECT, name, scopes=["predict"], name=purpose, **KEY_LIMITS
        )
        return made.id, made.token

    def predict(token: str) -> Requests:
        return Requests("POST", "/v1/predict", bodies=bodies, tokens=(token,))

    keys = {(c, r): key(f"c{c}-rep{r}") for c in plan.concurrency for r in range(plan.reps)}
    _, warm = key("warm-up")
    headers = {"Authorization": f"Bearer {warm}", "Content-Type": "application/json"}

    def accepted() -> bool | None:
        url = f"http://127.0.0.1:{port}/v1/predict"
        return httpx.post(url, content=bodies[0], headers=headers, timeout=30).is_success or None

    _until("the serving keys to reach the server", accepted, seconds=60)
    time.sleep(KEY_REFRESH_SECONDS + 0.5)  # every replica has refreshed its keys since
    for warm_port in (port, bare[1]):  # connections and first requests, not measured
        load.drive(
            port=warm_port, requests=predict(warm), connections=max(plan.concurrency), seconds=1
        )
    roles = {
        "serving": _descendants(plane.agent.process.pid),  # the replicas (bwrap, python)
        "agent": [plane.agent.process.pid],
        "plane": [plane.server.process.pid],
    }
    bare_roles = {"serving": [bare[0].process.pid]}
    points: dict[tuple[int, int], Point] = {}
    for clients in plan.concurrency:
        for rep in range(plan.reps):  # alternated: drift on the host hits both sides alike
            measured, seconds = predict(keys[clients, rep][1]), plan.seconds
            points[clients, rep] = _drive(
                load, roles, port=port, requests=measured, clients=clients, seconds=seconds
            )
            results.setdefault("bare", {}).setdefault(clients, []).append(
                _drive(
                    load,
                    bare_roles,
                    port=bare[1],
                    requests=predict(warm),
                    clients=clients,
                    seconds=seconds,
                )
            )
    counts = _received(admin, {keys[at][0]: point.answered for at, point in points.items()})
    for (clients, rep), point in points.items():
        events = counts[keys[clients, rep][0]]
        results.setdefault(label, {}).setdefault(clients, []).append(replace(point, events=events))


# -- the report ---------------------------------------------------------------------------

ROLES = ("serving", "agent", "plane", "load")


@dataclass(frozen=True)
class Summary:
    """The medians of a server's points at one concurrency (counts summed)."""

    rate: float
    p50_ms: float
    p99_ms: float
    answered: int
    cut_off: int
    failed: int
    events: int | None
    cpu_ms: dict[str, float]

    @classmethod
    def of(cls, points: list[Point]) -> Summary:
        events = [p.events for p in points if p.events is not None]
        return cls(
            rate=statistics.median(p.rate for p in points),
            p50_ms=statistics.median(p.p50_ms for p in points),
            p99_ms=statistics.median(p.p99_ms for p in points),
            answered=sum(p.answered for p in points),
            cut_off=sum(p.sent - p.answered for p in points),
            failed=sum(p.failed for p in points),
            events=sum(events) if events else None,
            cpu_ms={r: statistics.median(p.cpu_ms[r] for p in points) for r in points[0].cpu_ms},
        )

    def row(self) -> str:
        audit = "" if self.events is None else f"{self.events / max(1, self.answered):.3f}"
        cpu = " ".join(f"{self.cpu_ms[r]:>6.2f}" if r in self.cpu_ms else f"{'':>6}" for r in ROLES)
        return (
            f"{self.rate:>7.0f} {self.p50_ms:>8.2f} {self.p99_ms:>8.2f} {self.answered:>8} "
            f"{self.cut_off:>7} {self.failed:>6} {audit:>9}  {cpu}"
        )


def _problems(results: Results) -> list[str]:
    """Failed requests, and an audit count outside what the requests allow: every answered
    request has its event; no event without a request sent."""
    found = []
    for label, by_clients in results.items():
        for clients, points in by_clients.items():
            failed, answered = sum(p.failed for p in points), sum(p.answered for p in points)
            if failed > MAX_FAILED * answered:
                found.append(f"{label} at {clients} clients: {failed} of {answered} failed")
            for p in points:
                if p.events is not None and not p.answered <= p.events <= p.sent:
                    found.append(
                        f"{label} at {clients} clients: {p.events} audit events for "
                        f"{p.answered} answers to {p.sent} requests"
                    )
    return found


def _report(results: Results, plan: Plan, *, load: Load) -> None:
    print(
        f"patients MLP 128-64, one row per request; load: {load.name}; "
        f"{plan.seconds:g} s per point, median of {plan.reps}"
    )
    print(
        f"{'clients':>7}  {'server':<11} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'answered':>8} {'cut off':>7} {'failed':>6} {'audit/req':>9}  "
        + " ".join(f"{role:>6}" for role in ROLES)
        + "  (CPU ms per answer)"
    )
    served = [label for label in results if label != "bare"]
    for clients in plan.concurrency:
        bare = Summary.of(results["bare"][clients])
        for label in ["bare", *served]:
            print(f"{clients:>7}  {label:<11} {Summary.of(results[label][clients]).row()}")
        for label in served:
            s = Summary.of(results[label][clients])
            print(
                f"{clients:>7}  {'ratio ' + label.split()[-1]:<11} {s.rate / bare.rate:>7.2f} "
                f"{s.p50_ms / bare.p50_ms:>8.2f} {s.p99_ms / bare.p99_ms:>8.2f}"
            )
    if problems := _problems(results):
        raise SystemExit("the figures above do not measure serving: " + "; ".join(problems))
    clients = min(plan.concurrency, key=lambda c: (abs(c - HEADLINE_CLIENTS), c))
    label = "bastion x1" if "bastion x1" in results else served[0]
    replicas = int(label.removeprefix("bastion x"))
    ratio = Summary.of(results[label][clients]).rate / Summary.of(results["bare"][clients]).rate
    print(
        f"ratio Bastion/bare throughput at {clients} connection{'s' * (clients != 1)}, "
        f"{replicas} replica{'s' * (replicas != 1)}: {ratio:.2f}x"
    )


# -- the run ------------------------------------------------------------------------------


def _preflight(redis_url: str) -> None:
    """Refuse to start without what a deployment needs here: a working bubblewrap, Redis."""
    import redis

    from bastion.errors import ConfigurationError
    from bastion.security.sandbox import Sandbox

    try:
        Sandbox.detect(private=())
    except ConfigurationError as exc:
        raise SystemExit(f"bench_serve measures sandboxed serve jobs only: {exc}") from None
    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        raise SystemExit(
            f"bench_serve: no Redis at {redis_url} ({exc}); start one ('redis-server "
            '--daemonize yes --bind 127.0.0.1 --port 6379 --save ""\') or pass --redis-url'
        ) from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--generator",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="auto: wrk when it is installed, else Python generator processes",
    )
    parser.add_argument("--bare-server", nargs=2, help=argparse.SUPPRESS)  # folder port
    args = parser.parse_args()
    if args.bare_server:
        _serve_bare(Path(args.bare_server[0]), int(args.bare_server[1]))
        return
    _preflight(args.redis_url)
    plan = Plan(concurrency=args.concurrency, reps=args.reps, seconds=args.seconds)
    results: Results = {}
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-serve-")))
        bodies = _bodies()
        load = loadgen.choose(args.generator, work, stack)
        plane = stack.enter_context(_plane(work))
        _open_model(plane, _production_model(plane), work / "bare-model")
        port = _free_port()
        bare = stack.enter_context(
            _process(
                "the bare endpoint",
                [sys.executable, __file__, "--bare-server", str(work / "bare-model"), str(port)],
                env=dict(os.environ),
                log=work / "bare.log",
            )
        )
        _until("the bare endpoint", lambda: bare.answers(f"http://127.0.0.1:{port}/healthz"))
        for replicas in args.replicas:
            with _deployment(plane, replicas=replicas, redis_url=args.redis_url) as deployment:
                _measure(
                    plane,
                    load,
                    plan,
                    label=f"bastion x{replicas}",
                    deployment=deployment,
                    bare=(bare, port),
                    bodies=bodies,
                    results=results,
                )
    _report(results, plan, load=load)


if __name__ == "__main__":
    main()
