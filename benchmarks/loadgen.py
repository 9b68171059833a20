"""HTTP load from outside the measured processes, for the benchmarks that drive a server.

``wrk`` (one thread, C and epoll, a Lua script) when it is installed, else one Python process
per core, each an asyncio loop over raw keep-alive connections (no HTTP client library on the
sending path). Both send prepared requests in turn, every connection awaiting its answer
before sending the next, and report the 2xx rate, p50/p99 latency and failures. Requests may
each carry another bearer token (``Requests.tokens``), to measure credentials a cache has not
seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import random
import re
import resource
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Protocol

__all__ = ["Generators", "Load", "Point", "Requests", "Wrk", "choose", "cpu_seconds"]


@dataclass(frozen=True)
class Point:
    """One measurement: 2xx answers per second and latency percentiles; every answer (2xx or
    not), every request sent (wrk stops with one in flight on each connection), the failures
    (not 2xx, or a broken connection); CPU milliseconds per answer by role; and, where the
    benchmark counts them, the audit events received for the measurement's requests."""

    rate: float
    p50_ms: float
    p99_ms: float
    answered: int
    sent: int
    failed: int
    cpu_ms: dict[str, float] = field(default_factory=dict)
    events: int | None = None


@dataclass(frozen=True)
class Requests:
    """What to send: request ``i`` is ``method path`` with ``bodies[i % len(bodies)]`` (JSON;
    "" for none) and ``tokens[i % len(tokens)]`` as its bearer token ("" for none)."""

    method: str
    path: str
    bodies: tuple[str, ...] = ("",)
    tokens: tuple[str, ...] = ("",)

    def __len__(self) -> int:
        return max(len(self.bodies), len(self.tokens))

    def parts(self, i: int) -> tuple[str, str]:
        return self.tokens[i % len(self.tokens)], self.bodies[i % len(self.bodies)]

    def raw(self, port: int) -> list[bytes]:
        """Every request as the bytes of an HTTP/1.1 request."""
        prepared = []
        for i in range(len(self)):
            token, body = self.parts(i)
            head = f"{self.method} {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            if token:
                head += f"Authorization: Bearer {token}\r\n"
            if body:
                head += "Content-Type: application/json\r\n"
            prepared.append(f"{head}Content-Length: {len(body.encode())}\r\n\r\n{body}".encode())
        return prepared


class Load(Protocol):
    name: str

    def drive(self, *, port: int, requests: Requests, connections: int, seconds: float) -> Point:
        """Send ``requests`` in turn on ``connections`` keep-alive connections for ``seconds``."""
        ...

    def cpu_seconds(self) -> float:
        """The CPU time the load generator has used so far."""
        ...


def cpu_seconds(pids: Iterable[int]) -> float:
    """User and system CPU seconds of live processes, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


WRK_SCRIPT = """
-- args: method, path, a file of "token<TAB>body" lines, the line to start at.
-- One request per line in turn; done() prints one line to parse.
local requests, n = {}, 0
sent = 0
function init(args)
  for line in io.lines(args[3]) do
    local tab = string.find(line, "\\t", 1, true)
    local token, body = string.sub(line, 1, tab - 1), string.sub(line, tab + 1)
    local headers = {}
    if token ~= "" then headers["Authorization"] = "Bearer " .. token end
    if body ~= "" then headers["Content-Type"] = "application/json" else body = nil end
    requests[#requests + 1] = wrk.format(args[1], args[2], headers, body)
  end
  n = tonumber(args[4]) % #requests
end
function request()
  n = n % #requests + 1
  sent = sent + 1
  return requests[n]
end
threads = {}
function setup(thread) threads[#threads + 1] = thread end
function done(summary, latency, _)
  local total, e = -1, summary.errors  -- -1: wrk calls request() once to check the script
  for _, thread in ipairs(threads) do total = total + thread:get("sent") end
  io.write(string.format("bench-load %.0f %.0f %.0f %.0f %.0f %.0f %.0f\\n",
    summary.requests, total, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


class Wrk:
    """wrk, one thread: a small share of a core at these rates. Each measurement starts at
    a random request, so repeated runs do not resend the same first tokens."""

    name = "wrk (1 thread, Lua script)"

    def __init__(self, binary: str, work: Path) -> None:
        self.binary, self.work = binary, work
        self.script = work / "load.lua"
        self.script.write_text(WRK_SCRIPT)
        self._files: dict[Requests, Path] = {}
        self._random = random.Random(0)

    def cpu_seconds(self) -> float:
        used = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk: the children waited for
        return used.ru_utime + used.ru_stime

    def _lines(self, requests: Requests) -> Path:
        """The requests as a file only this user can read (it holds tokens)."""
        if requests not in self._files:
            path = self.work / f"requests-{len(self._files)}.tsv"
            path.touch(mode=0o600)
            lines = (("\t".join(requests.parts(i))) for i in range(len(requests)))
            path.write_text("\n".join(lines) + "\n")
            self._files[requests] = path
        return self._files[requests]

    def drive(self, *, port: int, requests: Requests, connections: int, seconds: float) -> Point:
        whole = max(1, round(seconds))  # wrk counts whole seconds
        start = self._random.randrange(len(requests))
        args = [requests.method, requests.path, str(self._lines(requests)), str(start)]
        command = [self.binary, "-t1", f"-c{connections}", f"-d{whole}s", "--timeout", "60s"]
        done = subprocess.run(
            [*command, "-s", str(self.script), f"http://127.0.0.1:{port}", "--", *args],
            capture_output=True,
            text=True,
            timeout=whole + 120,
            check=False,
        )
        found = re.search(r"^bench-load (.+)$", done.stdout, re.MULTILINE)
        if done.returncode or found is None:
            raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        answered, sent, micros, refused, broken, p50, p99 = map(float, found.group(1).split())
        return Point(
            rate=(answered - refused) / (micros / 1e6),
            p50_ms=p50 / 1000,
            p99_ms=p99 / 1000,
            answered=int(answered),
            sent=int(sent),
            failed=int(refused + broken),
        )


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class _Batch:
    """One generator process's share of a measurement."""

    port: int
    requests: list[bytes]
    connections: int
    #: The request its first connection sends first (each connection starts elsewhere).
    first: int
    #: When sending starts (wall clock, the same in every process), and for how long.
    start: float
    seconds: float


def _generate(batch: _Batch) -> tuple[list[float], int, float]:
    """(In a generator process) the batch's keep-alive connections, one request at a time
    each, every answer awaited: the latencies, the failures, when the last answer came."""
    latencies: list[float] = []
    failed = 0
    requests = batch.requests

    async def connection(index: int) -> None:
        nonlocal failed
        reader, writer = await asyncio.open_connection("127.0.0.1", batch.port)
        await asyncio.sleep(batch.start - time.time())
        try:
            while time.time() < batch.start + batch.seconds:
                sent = time.perf_counter()
                writer.write(requests[index % len(requests)])
                answer = await reader.readuntil(b"\r\n\r\n")
                length = _CONTENT_LENGTH.search(answer)
                await reader.readexactly(int(length.group(1)) if length else 0)
                latencies.append(time.perf_counter() - sent)
                failed += not answer.startswith(b"HTTP/1.1 2")
                index += 1
        except (OSError, asyncio.IncompleteReadError):
            failed += 1  # the connection broke: counted, and not reopened
        finally:
            writer.close()

    async def every_connection() -> None:
        spread = max(1, len(requests) // max(1, batch.connections))
        await asyncio.gather(
            *(connection(batch.first + spread * k) for k in range(batch.connections))
        )

    asyncio.run(every_connection())
    return latencies, failed, time.time()


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Generators:
    """One Python process per core, each an asyncio loop over raw keep-alive connections."""

    def __init__(self, pool: Pool, processes: int) -> None:
        self.pool, self.processes = pool, processes
        self.name = f"{processes} Python generator processes (asyncio, raw HTTP/1.1)"
        self._random = random.Random(0)

    def cpu_seconds(self) -> float:
        return cpu_seconds(p.pid for p in multiprocessing.active_children() if p.pid)

    def drive(self, *, port: int, requests: Requests, connections: int, seconds: float) -> Point:
        shares = [
            connections // self.processes + (i < connections % self.processes)
            for i in range(self.processes)
        ]
        raw = requests.raw(port)
        offset = self._random.randrange(len(raw))
        start = time.time() + 0.5  # every process has connected by then
        batches = [
            _Batch(
                port,
                raw,
                n,
                first=offset + i * len(raw) // self.processes,
                start=start,
                seconds=seconds,
            )
            for i, n in enumerate(shares)
            if n
        ]
        parts = self.pool.map(_generate, batches)
        latencies = sorted(x for part in parts for x in part[0])
        failed = sum(part[1] for part in parts)
        return Point(
            rate=(len(latencies) - failed) / (max(part[2] for part in parts) - start),
            p50_ms=_percentile(latencies, 0.5) * 1000,
            p99_ms=_percentile(latencies, 0.99) * 1000,
            answered=len(latencies),
            sent=len(latencies),
            failed=failed,
        )


def choose(choice: str, work: Path, stack: contextlib.ExitStack) -> Load:
    """``wrk`` ("auto" and wrk installed, or "wrk"), else Python generators: one process per
    core, in a pool ``stack`` closes."""
    binary = shutil.which("wrk")
    if choice == "wrk" and binary is None:
        raise SystemExit("--generator wrk: wrk is not installed (apt-get install wrk)")
    if binary is not None and choice != "python":
        return Wrk(binary, work)
    processes = os.cpu_count() or 1
    pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(processes))
    return Generators(pool, processes)
