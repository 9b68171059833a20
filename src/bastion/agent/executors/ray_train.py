"""Data-parallel runs on a Ray cluster: Ray Train places the workers, each in a sandbox.

A run with ``resources.workers: W > 1`` on the Ray executor becomes a Ray Train
``TorchTrainer`` with W workers (``resources_per_worker``: its ``cpus_per_worker``, a GPU each
when it asked for GPUs), possibly on several nodes. Ray Train's workers do not train: each
starts the job's process for its rank in a sandbox (:class:`LocalJob`), as the plain Ray
executor does for a whole job, and waits for it. Rank 0's process is the job (it reports,
writes the checkpoints, packages the model); the others train their share and exit. They
meet at a TCP store that rank 0's process opens on its node, at a port rank 0's Ray worker
chose and sent to the others over Ray Train's own process group, so these sandboxes keep
the node's network (they still hold no key and no token but their relay's).

A process that dies (or a node that goes) fails its Ray worker; Ray Train then starts the
whole group again, up to ``resources.restarts`` times, and rank 0's job resumes from the
newest checkpoint it kept. The Ray Train run is driven by a Ray task, so cancelling that
task takes the workers and their sandboxes down with it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from bastion.agent.executors.base import JobRequest
from bastion.agent.job import EXIT_FENCED, EXIT_REFUSED, EXIT_REPORTED_FAILURE, EXIT_SEAL
from bastion.agent.ranks import RANK_ENV, RENDEZVOUS_ENV
from bastion.files import atomic_write_bytes
from bastion.ports import free_port

#: Exit codes of rank 0 that end the run (its success and its own reported failures).
_FINAL = frozenset({0, EXIT_REPORTED_FAILURE, EXIT_FENCED, EXIT_REFUSED, EXIT_SEAL})

__all__ = ["drive", "rank_loop"]


def rank_loop(config: dict[str, Any]) -> None:
    """A Ray Train worker: run this rank's sandboxed process; raise when it failed."""
    import ray  # noqa: PLC0415 - runs on a Ray Train worker
    import ray.train  # noqa: PLC0415
    import torch  # noqa: PLC0415
    import torch.distributed as dist  # noqa: PLC0415

    from bastion.agent.executors.local import LocalJob  # noqa: PLC0415
    from bastion.agent.executors.ray import on_assigned_gpus  # noqa: PLC0415

    request: JobRequest = config["request"]
    rank = ray.train.get_context().get_world_rank()
    port = torch.tensor([free_port("") if rank == 0 else 0], dtype=torch.int64)
    dist.broadcast(port, src=0)  # Ray Train's own group: where ours will meet
    address = f"{os.environ['MASTER_ADDR']}:{int(port.item())}"
    # This worker's GPU (Ray Train gives each one when the run asked for GPUs), not the
    # run's: a rank's sandbox sees its own GPU only.
    own = dataclasses.replace(request, gpus=request.gpus[:1]) if request.gpus else request
    own = on_assigned_gpus(own, ray.get_gpu_ids())
    environment = {**own.environment, RANK_ENV: str(rank), RENDEZVOUS_ENV: address}
    if "GLOO_SOCKET_IFNAME" in os.environ:  # the operator's choice of interface, on the node
        environment["GLOO_SOCKET_IFNAME"] = os.environ["GLOO_SOCKET_IFNAME"]
    job = LocalJob(dataclasses.replace(own, environment=environment, network=True))
    try:
        while (code := job.poll()) is None:
            time.sleep(0.1)
    except BaseException:
        job.kill()
        raise
    if code != 0 and not (rank == 0 and code in _FINAL):
        raise RuntimeError(f"worker {rank}'s process exited with code {code}")
    if rank == 0:  # how the job ended, for the driver (beside the job, on shared storage)
        atomic_write_bytes(_exit_file(request), str(code).encode())
    ray.train.report({"exit_code": code})  # every worker reports: Ray Train waits for all


def drive(request: JobRequest) -> int:
    """A Ray task: train the group with Ray Train; rank 0's exit code (-1: it gave up)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig  # noqa: PLC0415
    from ray.train.torch import TorchConfig, TorchTrainer  # noqa: PLC0415

    per_worker: dict[str, float] = {"CPU": float(request.cpus // max(request.workers, 1))}
    trainer = TorchTrainer(
        rank_loop,
        train_loop_config={"request": request},
        scaling_config=ScalingConfig(
            num_workers=request.workers,
            use_gpu=bool(request.gpus),
            resources_per_worker=per_worker,
        ),
        torch_config=TorchConfig(backend="gloo"),
        run_config=RunConfig(
            name=f"{request.run_id}-{request.attempt}",
            storage_path=str(request.workdir / "ray-train"),
            failure_config=FailureConfig(max_failures=request.restarts),
        ),
    )
    try:
        trainer.fit()
    except Exception:  # out of restarts: the job's log and Ray's say why
        return -1
    written = _exit_file(request)
    return int(written.read_text()) if written.is_file() else -1


def _exit_file(request: JobRequest) -> Path:
    return request.workdir / "ray-train" / "exit-code"
