"""The local executor: one subprocess per job, with resource limits, at most N at once."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from bastion.agent.executors.base import JobRequest

__all__ = ["LocalExecutor", "LocalJob"]


def _limits(request: JobRequest) -> Callable[[], None]:
    def apply() -> None:  # runs in the child between fork and exec
        memory = request.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        if request.cpu_seconds is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (request.cpu_seconds, request.cpu_seconds))
        os.setsid()  # its own process group, so kill() takes its children too

    return apply


class LocalJob:
    def __init__(self, request: JobRequest) -> None:
        self.request = request
        self._started = time.monotonic()
        log = (request.workdir / "job.log").open("ab")
        self._process = subprocess.Popen(  # noqa: S603 - fixed interpreter and module
            [sys.executable, "-m", "bastion.agent.job", str(request.workdir)],
            cwd=request.workdir,
            env=request.environment,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_limits(request),  # noqa: PLW1509 - setrlimit must run in the child
            close_fds=True,
        )
        log.close()

    def poll(self) -> int | None:
        return self._process.poll()

    def kill(self) -> None:
        if self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=30)

    def elapsed(self) -> float:
        return time.monotonic() - self._started


class LocalExecutor:
    def __init__(self, *, max_parallel: int) -> None:
        self.max_parallel = max_parallel
        self._jobs: list[LocalJob] = []

    @property
    def free_slots(self) -> int:
        self._jobs = [job for job in self._jobs if job.poll() is None]
        return self.max_parallel - len(self._jobs)

    def start(self, request: JobRequest) -> LocalJob:
        job = LocalJob(request)
        self._jobs.append(job)
        return job
