"""The Ray executor: each job runs as a Ray task that supervises the job process.

The agent connects to an existing Ray cluster (``--ray-address``) with Ray's token
authentication (``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` in the agent's
environment). The storage root must be visible at the same path on every Ray node.
"""

from __future__ import annotations

import time
from typing import Any

from bastion.agent.executors.base import JobRequest
from bastion.errors import ConfigurationError

__all__ = ["RayExecutor", "RayJob", "connect"]


def connect(address: str) -> Any:
    """Connect this process to the Ray cluster at ``address`` (idempotent)."""
    try:
        import ray  # noqa: PLC0415 - Ray is an optional extra
    except ImportError:
        raise ConfigurationError("the ray executor needs Ray: pip install 'bastion[ray]'") from None
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ...
            raise ConfigurationError(
                f"cannot join the Ray cluster at {address}: {exc}; check the address and "
                "RAY_AUTH_TOKEN"
            ) from None
    return ray


def _supervise(request: JobRequest) -> int:
    """Runs inside a Ray worker: start the job process, wait, kill it if cancelled."""
    from bastion.agent.executors.local import LocalJob  # noqa: PLC0415 - runs on a Ray worker

    job = LocalJob(request)
    try:
        while (code := job.poll()) is None:
            time.sleep(0.1)
        return code
    except BaseException:  # cancelled: take the job's whole process group down with us
        job.kill()
        raise


class RayJob:
    def __init__(self, ray: Any, remote: Any, request: JobRequest) -> None:
        self.request = request
        self._ray = ray
        if request.workers > 1:  # Ray Train places the workers (ray_train.py)
            self._ref = remote.remote(request)
        else:
            self._ref = remote.options(num_cpus=request.cpus).remote(request)
        self._started = time.monotonic()
        self._code: int | None = None

    def poll(self) -> int | None:
        if self._code is None:
            ready, _ = self._ray.wait([self._ref], timeout=0)
            if ready:
                try:
                    self._code = int(self._ray.get(ready[0]))
                except Exception:  # the task died or was cancelled
                    self._code = -1
        return self._code

    def kill(self) -> None:
        if self.poll() is None:
            # A data-parallel run's driver goes at once: the Ray Train workers it owns go
            # with it, and each sandbox with its worker.
            self._ray.cancel(self._ref, force=self.request.workers > 1)

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def limit_reached(self) -> str | None:
        return None  # the supervising task's LocalJob knows; its exit code says the rest


class RayExecutor:
    def __init__(self, *, max_parallel: int, address: str | None = None) -> None:
        if not address:
            raise ConfigurationError("the ray executor needs --ray-address HOST:PORT")
        self._ray = connect(address)
        self._remote = self._ray.remote(num_cpus=1, max_retries=0)(_supervise)
        from bastion.agent.executors.ray_train import drive  # noqa: PLC0415 - Ray only

        # It waits on Ray Train's workers, which hold the CPUs.
        self._drive = self._ray.remote(num_cpus=0, max_retries=0)(drive)
        self.max_parallel = max_parallel
        self._jobs: list[RayJob] = []

    @property
    def free_slots(self) -> int:
        self._jobs = [job for job in self._jobs if job.poll() is None]
        return self.max_parallel - len(self._jobs)

    def start(self, request: JobRequest) -> RayJob:
        remote = self._drive if request.workers > 1 else self._remote
        job = RayJob(self._ray, remote, request)
        self._jobs.append(job)
        return job
