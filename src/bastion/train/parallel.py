"""Rank 0's side of data-parallel training: start the workers, train, start again on a loss.

:func:`fit_parallel` is what a training job calls for ``resources.workers > 1``. The job's
process trains as rank 0 and reports; ranks 1..W-1 are :class:`RankJob` processes
(see :mod:`bastion.train.distributed` for what each rank computes). When a worker dies the
step's collective fails on rank 0, which stops the other workers and starts the whole
group again from the newest checkpoint (the copy it kept when it wrote it), at most
``restarts`` times; fresh hooks each time, so the accountant resumes from the checkpoint's
history rather than counting twice.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bastion.evaluate.attacks import Bound
from bastion.files import ensure_private_dir
from bastion.train.config import TrainConfig
from bastion.train.distributed import (
    Group,
    WorkerFailed,
    keeping_latest,
    worker_device,
    workers,
)
from bastion.train.recipe import recipe
from bastion.train.trainer import Hook, Trainer, TrainResult

__all__ = ["RankJob", "fit_parallel"]


@dataclass(frozen=True)
class RankJob:
    """What rank 1..W-1 runs: the same model, rows, recipe and checkpoint as rank 0.

    Sent to each worker process when it starts (the tensors by shared memory, read only);
    the worker copies the model before touching it."""

    config: TrainConfig
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    lower: Bound
    upper: Bound
    gpus: bool
    resume: Path | None
    threads: int

    def __call__(self, group: Group) -> None:
        torch.set_num_threads(self.threads)
        model = copy.deepcopy(self.model)
        model, hooks, _ = recipe(model, self.config, lower=self.lower, upper=self.upper)
        device = worker_device(group.rank, gpus=self.gpus)
        Trainer(self.config, hooks, device=device, group=group).fit(
            model, self.x, self.y, resume=self.resume
        )


def _worker_loss(exc: BaseException, failed: Callable[[], str | None]) -> str | None:
    """Why the group broke, when a worker's loss explains ``exc``; None when it does not."""
    for _ in range(50):  # the dead worker's exit code shows up a moment after the error
        reason = failed()
        if reason is not None:
            return reason
        time.sleep(0.1)
    if isinstance(exc, torch.distributed.DistBackendError | WorkerFailed):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def fit_parallel(
    config: TrainConfig,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    world: int,
    hooks: Callable[[], list[Hook]],
    gpus: bool,
    lower: Bound,
    upper: Bound,
    folder: Path,
    resume: Path | None,
    on_checkpoint: Callable[[Path, int], None],
    restarts: int,
    threads: int,
    say: Callable[[str], None],
) -> TrainResult:
    """Train ``model`` with ``world`` ranks; rank 0 is this process.

    ``hooks`` makes rank 0's hooks (fresh for every start of the group); ``folder`` is a
    private folder of the job's (the rendezvous file, the newest checkpoint's copy);
    ``resume`` is the sealed checkpoint a retried attempt starts from.
    """
    ensure_private_dir(folder)
    pristine = copy.deepcopy(model)  # never trained: every start copies it
    latest = folder / "resume"
    checkpoints = folder / "checkpoints"

    for start in range(restarts + 1):
        begin = latest if latest.is_dir() else resume
        task = RankJob(config, pristine, x, y, lower, upper, gpus, begin, threads)
        store = folder / f"rendezvous-{start}"
        with workers(world, store, task) as others:
            try:
                others.wait_ready()
                trainer = Trainer(
                    config,
                    hooks(),
                    device=worker_device(0, gpus=gpus),
                    group=Group(0, world, store),
                )
                result = trainer.fit(
                    copy.deepcopy(pristine),
                    x,
                    y,
                    resume=begin,
                    checkpoints=checkpoints,
                    on_checkpoint=keeping_latest(latest, on_checkpoint),
                )
                others.finish()
                return result
            except Exception as exc:
                reason = _worker_loss(exc, others.failed)
                if reason is None:
                    raise
                if start == restarts:
                    raise WorkerFailed(
                        f"{reason}; the group was started {restarts + 1} times "
                        f"(resources.restarts: {restarts}), giving up"
                    ) from None
                where = "its last checkpoint" if latest.is_dir() else "the beginning"
                say(
                    f"{reason}; starting the {world} workers again from {where} "
                    f"(restart {start + 1} of {restarts})"
                )
    raise AssertionError("unreachable")  # pragma: no cover
