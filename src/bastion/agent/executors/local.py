"""The local executor: one subprocess per job, with resource limits, at most N at once.

Each job leads a process group of its own (so a kill takes its children too), creates
files only its user can read (umask 077), and dies with the agent (:mod:`bastion.agent.lifeline`).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from bastion.agent.executors.base import JobRequest
from bastion.agent.lifeline import LIFELINE_ENV, bind_to_parent

__all__ = ["LocalExecutor", "LocalJob"]


def _child_setup(request: JobRequest, *, parent: int) -> Callable[[], None]:
    def apply() -> None:  # runs in the child between fork and exec
        memory = request.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        if request.cpu_seconds is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (request.cpu_seconds, request.cpu_seconds))
        os.umask(0o077)  # whatever the process that starts jobs had (a Ray worker's 022)
        os.setsid()  # its own process group, so kill() takes its children too
        bind_to_parent(parent)

    return apply


class LocalJob:
    def __init__(self, request: JobRequest) -> None:
        self.request = request
        self._started = time.monotonic()
        # The lifeline: the job reads end of file once this process no longer holds ``_alive``.
        lifeline, self._alive = os.pipe()  # neither end is inherited by anything else
        self._closing = threading.Lock()  # the loop and the heartbeat thread both end jobs
        log = (request.workdir / "job.log").open("ab")
        try:
            self._process = subprocess.Popen(  # noqa: S603 - fixed interpreter and module
                [sys.executable, "-m", "bastion.agent.job", str(request.workdir)],
                cwd=request.workdir,
                env={**request.environment, LIFELINE_ENV: str(lifeline)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # setrlimit, setsid and prctl must run in the child
                preexec_fn=_child_setup(request, parent=os.getpid()),  # noqa: PLW1509
                close_fds=True,
                pass_fds=(lifeline,),
            )
        except BaseException:
            os.close(self._alive)
            raise
        finally:
            os.close(lifeline)
            log.close()

    def poll(self) -> int | None:
        code = self._process.poll()
        if code is not None:
            self._release()
        return code

    def kill(self) -> None:
        if self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=30)
        self._release()

    def _release(self) -> None:
        """Close this end of the lifeline once the job has ended (one descriptor per job)."""
        with self._closing:
            if self._alive >= 0:
                os.close(self._alive)
                self._alive = -1

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
