"""The Ray executor: each job runs as a Ray task that supervises the job process.

The agent connects to an existing Ray cluster (``--ray-address``) with Ray's token
authentication (``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` in the agent's
environment). The storage root must be visible at the same path on every Ray node.

GPUs: the agent advertises the Ray cluster's GPUs (``ray.cluster_resources()``, asked once
at start) and hands them out as slots; a job given N of them asks Ray for ``num_gpus=N``
(a data-parallel run, one per Ray Train worker), and on the node Ray chose the job's
sandbox gets the GPUs Ray assigned to its task (``ray.get_gpu_ids()``): their device nodes
and ``CUDA_VISIBLE_DEVICES``, nothing else (:func:`on_assigned_gpus`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from bastion.agent.executors.base import JobRequest
from bastion.agent.job_setup import gpu_environment
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from bastion.api.clusters import GpuInfo

__all__ = ["RayExecutor", "RayJob", "connect", "on_assigned_gpus"]


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


def on_assigned_gpus(request: JobRequest, assigned: list[Any]) -> JobRequest:
    """``request`` as it runs on this Ray node: its GPU slots replaced by the node's GPUs
    Ray ``assigned`` to the task (``ray.get_gpu_ids()``), which its sandbox then binds and
    its ``CUDA_VISIBLE_DEVICES`` names. A job given no GPU keeps none."""
    if not request.gpus:
        return request
    if len(assigned) != len(request.gpus):  # Ray gave other than asked: refuse, not guess
        raise ConfigurationError(
            f"Ray assigned GPUs {assigned} to a job given {len(request.gpus)}; "
            "check the Ray cluster's GPU resources"
        )
    gpus = tuple(int(gpu) for gpu in assigned)
    environment = {**request.environment, **gpu_environment(gpus)}
    return dataclasses.replace(request, gpus=gpus, environment=environment)


def _supervise(request: JobRequest) -> int:
    """Runs inside a Ray worker: start the job process, wait, kill it if cancelled."""
    import ray  # noqa: PLC0415 - runs on a Ray worker

    from bastion.agent.executors.local import LocalJob  # noqa: PLC0415 - runs on a Ray worker

    job = LocalJob(on_assigned_gpus(request, ray.get_gpu_ids()))
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
            self._ref = remote.options(num_cpus=request.cpus, num_gpus=len(request.gpus)).remote(
                request
            )
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

    def gpus(self) -> list[GpuInfo]:
        """The Ray cluster's GPUs, as slots 0..N-1 (Ray assigns the devices): named by
        the accelerator type Ray reports when all its GPUs are of one type."""
        from bastion.api.clusters import GpuInfo  # noqa: PLC0415

        resources = self._ray.cluster_resources()
        kinds = [key.split(":", 1)[1] for key in resources if key.startswith("accelerator_type:")]
        name = f"{kinds[0]} (Ray)" if len(kinds) == 1 else "GPU (Ray)"
        return [GpuInfo(index=slot, name=name) for slot in range(int(resources.get("GPU", 0)))]

    def start(self, request: JobRequest) -> RayJob:
        remote = self._drive if request.workers > 1 else self._remote
        job = RayJob(self._ray, remote, request)
        self._jobs.append(job)
        return job
