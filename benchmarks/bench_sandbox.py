"""The sandbox's cost per job start: the same job through the local executor, with and without it.

Both sides go through ``LocalJob`` exactly as the agent starts a job: a relay socket, a
pids cgroup where one can be made, resource limits, the lifeline, a process group of its
own. The Bastion side wraps the job in bubblewrap (namespaces, read-only binds of the
system and the Python environment, a private /tmp, no network); the baseline is the same
executor with the sandbox off (an agent started with ``--no-sandbox``). Each job is
``python -I -c 'import bastion.agent.job'`` (the interpreter and the job module, which a
real job starts with), timed from ``LocalJob(...)`` until its process has exited. The two sides
alternate, so load on the host falls on both alike. Median of every repetition.

    python benchmarks/bench_sandbox.py [--reps 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bastion.agent.executors.base import JobRequest
from bastion.agent.executors.local import LocalJob
from bastion.agent.relay import RelayTarget
from bastion.security.sandbox import Limits, Sandbox

#: What each job runs: the job module's import (a real job's start), and an empty
#: interpreter (where bubblewrap's own share is largest).
JOBS = {
    "import bastion.agent.job": ("-I", "-c", "import bastion.agent.job"),
    "empty interpreter": ("-I", "-S", "-c", "pass"),
}


def _start(workdir: Path, sandbox: Sandbox | None, job_args: tuple[str, ...]) -> float:
    request = JobRequest(
        run_id="bench",
        attempt=1,
        workdir=workdir,
        environment={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(workdir)},
        timeout_seconds=60,
        limits=Limits(memory_mb=4096),
        relay=RelayTarget(
            url="http://127.0.0.1:9", verify=True, token="t", project="p", run_id="r"
        ),
        sandbox=sandbox,
        command=(sys.executable, *job_args),
    )
    started = time.perf_counter()
    job = LocalJob(request)
    code = job.wait(timeout=60)
    elapsed = time.perf_counter() - started
    job.poll()  # release its relay and cgroup (not timed: the same on both sides)
    if code != 0:
        raise RuntimeError(f"the job failed ({code}): {(workdir / 'job.log').read_text()[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as folder:
        root = Path(folder)
        sandbox = Sandbox.detect(private=(root / "home",))
        print(f"sandbox: {sandbox.version}; binds {', '.join(map(str, sandbox.environment))}")
        results: dict[str, tuple[float, float]] = {}
        for label, job_args in JOBS.items():
            sandboxed: list[float] = []
            bare: list[float] = []
            for rep in range(args.reps + 2):  # two warm-up rounds (page cache), not counted
                for side, times in ((sandbox, sandboxed), (None, bare)):
                    workdir = root / f"{len(results)}-{'s' if side else 'b'}{rep}"
                    workdir.mkdir(mode=0o700)
                    elapsed = _start(workdir, side, job_args)
                    if rep >= 2:
                        times.append(elapsed)
            results[label] = (statistics.median(sandboxed), statistics.median(bare))
    for label, (with_sandbox, without) in results.items():
        print(
            f"{label:26s} sandboxed {with_sandbox * 1000:7.1f} ms, unsandboxed "
            f"{without * 1000:7.1f} ms: +{(with_sandbox - without) * 1000:.1f} ms"
        )
    with_sandbox, without = results["import bastion.agent.job"]
    print(f"sandbox cost per job start: {(with_sandbox - without) * 1000:.1f} ms (target < 50 ms)")
    print(f"ratio sandboxed/unsandboxed (job start): {with_sandbox / without:.2f}x")


if __name__ == "__main__":
    main()
