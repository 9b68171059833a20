"""The local executor: one sandboxed subprocess per job, with resource limits, at most N at once.

Each job runs under bubblewrap (:mod:`bastion.security.sandbox`) unless the agent was started
with ``--no-sandbox``, talks to the control plane only through its relay
(:mod:`bastion.agent.relay`, served by this process), leads a process group of its own (so
a kill takes its children too), creates files only its user can read (umask 077), and dies
with the agent (:mod:`bastion.agent.lifeline`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from bastion.agent.capacity import probe_gpus
from bastion.agent.executors.base import JobRequest
from bastion.agent.lifeline import LIFELINE_ENV, bind_to_parent
from bastion.agent.relay import Relay
from bastion.security.sandbox import RELAY_SOCKET, Mounts, ProcessCap

if TYPE_CHECKING:
    from bastion.api.clusters import GpuInfo

__all__ = ["RELAY_ENV", "LocalExecutor", "LocalJob"]

#: The job's environment names the relay's socket here.
RELAY_ENV = "BASTION_RELAY"


def _child_setup(request: JobRequest, *, parent: int, cap: ProcessCap | None) -> Callable[[], None]:
    def apply() -> None:  # runs in the child between fork and exec
        if cap is not None:
            cap.enter()
        request.limits.apply(cap_processes=cap is None)
        os.umask(0o077)  # whatever the process that starts jobs had (a Ray worker's 022)
        os.setsid()  # its own process group, so kill() takes its children too
        bind_to_parent(parent)

    return apply


class LocalJob:
    def __init__(self, request: JobRequest) -> None:
        self.request = request
        self._started = time.monotonic()
        self._closing = threading.Lock()  # the loop and the heartbeat thread both end jobs
        self._forks_refused = 0
        self._relay = Relay(request.relay)
        self._cap = ProcessCap.create(
            f"bastion-{request.run_id}-{request.attempt}-{os.getpid()}",
            request.limits.processes,
        )
        argv = list(request.command) or [
            sys.executable,
            "-m",
            "bastion.agent.job",
            str(request.workdir),
        ]
        relay_path = self._relay.socket
        if request.sandbox is not None:
            mounts = Mounts(
                request.workdir,
                readonly=request.readonly,
                relay_dir=self._relay.folder,
                network=request.network,
                gpus=request.gpus,
            )
            argv = request.sandbox.command(argv, mounts)
            relay_path = RELAY_SOCKET
        # The lifeline: the job reads end of file once this process no longer holds ``_alive``.
        lifeline, self._alive = os.pipe()  # neither end is inherited by anything else
        log = (request.workdir / "job.log").open("ab")
        try:
            self._process = subprocess.Popen(  # noqa: S603 - fixed interpreter and module
                argv,
                cwd=request.workdir,
                env={
                    **request.environment,
                    LIFELINE_ENV: str(lifeline),
                    RELAY_ENV: str(relay_path),
                },
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # setrlimit, setsid, prctl and joining the cgroup must run in the child
                preexec_fn=_child_setup(request, parent=os.getpid(), cap=self._cap),  # noqa: PLW1509
                close_fds=True,
                pass_fds=(lifeline,),
            )
        except BaseException:
            os.close(self._alive)
            self._end_services()
            raise
        finally:
            os.close(lifeline)
            log.close()

    def wait(self, timeout: float | None = None) -> int:
        """Block until the job's process exits; its exit code (``poll`` then releases it)."""
        return self._process.wait(timeout=timeout)

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
        """Once the job has ended: close this end of the lifeline, stop its relay, drop its
        cgroup (one descriptor, one socket, one cgroup per job)."""
        with self._closing:
            if self._alive >= 0:
                os.close(self._alive)
                self._alive = -1
                self._end_services()

    def _end_services(self) -> None:
        self._relay.close()
        process = getattr(self, "_process", None)
        if self._cap is not None:
            if process is not None:  # what the job's group left behind
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            self._forks_refused = self._cap.refused()
            self._cap.remove()

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def limit_reached(self) -> str | None:
        if self._forks_refused:
            return (
                f"the process limit ({self.request.limits.processes}) refused "
                f"{self._forks_refused} new processes or threads"
            )
        return None


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

    def gpus(self) -> list[GpuInfo]:
        """This host's GPUs, by host index."""
        return probe_gpus()
