"""Data-parallel training: ``resources.workers`` processes train one model with PyTorch DDP.

The job's own process is rank 0; it starts ranks 1..W-1 as child processes inside the
same sandbox (no network beyond the sandbox's own loopback, no keys) and they meet through
a file store in the job's folder. Collectives run on gloo on the CPU and NCCL on GPUs
(one GPU per worker).

What the maths promises, and how it is kept:

* **Without DP** every rank draws the same shuffled order from the same seeded loader, so
  every step sees the single-process run's global batch; each rank takes its share of the
  rows (``rows[rank::W]``) and scales its summed loss by ``W / global batch``, so DDP's
  average of the ranks' gradients is exactly the global batch's mean gradient: two workers
  end with the single-process model to float tolerance.
* **With DP** (Opacus's distributed mode) the model is wrapped in ``DPDDP``; each rank
  Poisson-samples its shard of the rows at the single-process rate with a generator of its
  own, clips per sample, rank 0 alone adds the noise, gradients are summed across ranks
  and divided by the expected global batch. The accountant sees one sampled Gaussian step
  per global step: one epsilon for the run, the single-process figure.
* **Checkpoints** are written by rank 0 once per checkpoint step, with every rank's random
  state gathered into it (the agent seals that one directory). A worker that dies takes
  the step's collective down with it; rank 0 then stops the others and starts the group
  again from the last checkpoint, at most ``restarts`` times.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import logging
import os
import shutil
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "Group",
    "WorkerFailed",
    "Workers",
    "bare",
    "default_threads",
    "gather_states",
    "global_sums",
    "join",
    "keep_latest",
    "keeping_latest",
    "leave",
    "rank_share",
    "worker_device",
    "workers",
    "wrap",
]

log = logging.getLogger("bastion.train")

#: How long a collective waits for a rank that neither answers nor dies.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)


class WorkerFailed(RuntimeError):
    """A training worker died or stopped answering; the group must start again."""


@dataclass(frozen=True)
class Group:
    """One rank's place in a data-parallel group and where the group meets."""

    rank: int
    world: int
    #: A file store's path (processes of one host), or ``host:port`` of rank 0's TCP store.
    store: Path | str

    @property
    def leader(self) -> bool:
        return self.rank == 0


#: The last group this process entered and its backend, held until the next group starts.
#: A failed collective's work is freed by one of gloo's threads, which needs the GIL; the
#: DDP reducer (freed with the exception that broke the step) would otherwise drop the last
#: reference and join those threads with the GIL held: a deadlock. These references are
#: released with the GIL let go (torch's bindings do so), once the reducer is gone.
_former: list[Any] = []


def _release_former() -> None:
    gc.collect()  # a reducer caught in a reference cycle goes first
    while _former:
        _former.pop(0)  # the group, then its backend: the backend's destructor runs last


def join(group: Group, device: torch.device) -> None:
    """Enter the process group (gloo on the CPU, NCCL on GPUs) through the file store."""
    _release_former()
    backend = "nccl" if device.type == "cuda" else "gloo"
    store: Any
    if isinstance(group.store, Path):
        # gloo picks its interface from the host name; in the sandbox only loopback exists.
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        store = dist.FileStore(str(group.store), group.world)  # type: ignore[attr-defined]
    else:
        host, port = group.store.rsplit(":", 1)
        store = dist.TCPStore(  # type: ignore[attr-defined]
            host,
            int(port),
            group.world,
            is_master=group.leader,
            timeout=COLLECTIVE_TIMEOUT,
        )
        # Across hosts gloo uses the interface the host name resolves to, or the one the
        # operator named in GLOO_SOCKET_IFNAME (passed on from the Ray worker).
    dist.init_process_group(
        backend,
        store=store,
        rank=group.rank,
        world_size=group.world,
        timeout=COLLECTIVE_TIMEOUT,
    )
    entered = dist.distributed_c10d._get_default_group()
    _former.extend([entered, entered._get_backend(device)])


def leave() -> None:
    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(RuntimeError):
            dist.destroy_process_group()


def wrap(model: nn.Module, device: torch.device, *, private: bool) -> nn.Module:
    """The model as DDP sees it: Opacus's ``DPDDP`` for DP-SGD (Opacus reduces the
    clipped, noised gradients itself), PyTorch's ``DistributedDataParallel`` otherwise."""
    if private:
        from opacus.distributed import (  # noqa: PLC0415 - Opacus only for private runs
            DifferentiallyPrivateDistributedDataParallel,
        )

        wrapped: nn.Module = DifferentiallyPrivateDistributedDataParallel(model)
        return wrapped
    ids = [device.index or 0] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def bare(model: nn.Module) -> nn.Module:
    """The user's module inside Opacus's and DDP's wrappers."""
    while True:
        inner = getattr(model, "_module", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def rank_share(
    group: Group, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """This rank's rows of a global batch, and the loss scale that makes DDP's average of
    the ranks' summed losses the global batch's mean: ``W / len(global batch)``."""
    mine = slice(group.rank, None, group.world)
    return x[mine], y[mine], torch.tensor(group.world / max(len(y), 1))


def global_sums(values: list[float], device: torch.device) -> list[float]:
    """Sum ``values`` over the ranks (epoch metrics reported for the whole run)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return [float(v) for v in tensor.cpu()]


def gather_states(generators: dict[str, torch.Generator], group: Group) -> dict[str, torch.Tensor]:
    """Every rank's random states, named ``loader`` (rank 0) and ``loader@1`` ... (others),
    plus torch's global state as ``torch``/``torch@1``: what a resumed group restores."""
    own = {name: g.get_state().cpu() for name, g in generators.items()}
    own["torch"] = torch.get_rng_state()
    states: dict[str, torch.Tensor] = {}
    for name in sorted(own):
        mine = own[name]
        every = [torch.empty_like(mine) for _ in range(group.world)]
        dist.all_gather(every, mine)
        for rank, state in enumerate(every):
            states[name if rank == 0 else f"{name}@{rank}"] = state
    return states


# -- rank 0: starting and supervising the other ranks ------------------------------------


@dataclass(frozen=True)
class WorkerTask:
    """What a worker process needs to train its share (sent to it when it starts)."""

    rank: int
    world: int
    store: Path
    run: Callable[[Group], None]


def _ready(store: Path, rank: int) -> Path:
    return store.with_name(f"{store.name}.ready-{rank}")


def _worker_main(task: WorkerTask) -> None:
    """A worker process: die with the job, say it is up, then train as rank ``task.rank``."""
    from bastion.parent_death import bind_to_parent, exit_now  # noqa: PLC0415 - after spawn

    bind_to_parent(os.getppid())
    _ready(task.store, task.rank).touch(mode=0o600)
    code = 0
    try:
        task.run(Group(task.rank, task.world, task.store))
    except BaseException:
        traceback.print_exc()
        code = 1
    exit_now(code)  # rank 0 holds the model; a worker leaves nothing behind


class Workers:
    """Ranks 1..W-1 as child processes of the job (spawned: a fresh interpreter each)."""

    def __init__(self, world: int, store: Path, run: Callable[[Group], None]) -> None:
        context = torch.multiprocessing.get_context("spawn")
        self.store = store
        self.ranks = range(1, world)
        self.processes: list[BaseProcess] = []
        for rank in self.ranks:
            task = WorkerTask(rank=rank, world=world, store=store, run=run)
            process = context.Process(target=_worker_main, args=(task,), daemon=True)
            process.start()
            self.processes.append(process)

    def wait_ready(self, timeout: float = 600.0) -> None:
        """Until every worker is up (imports done), or :class:`WorkerFailed` when one died
        first: rank 0 then never waits on a rendezvous that a dead worker cannot join."""
        deadline = time.monotonic() + timeout
        while not all(_ready(self.store, rank).exists() for rank in self.ranks):
            reason = self.failed()
            if reason is not None:
                raise WorkerFailed(f"{reason} before joining the group")
            if time.monotonic() > deadline:
                raise WorkerFailed(f"the workers did not start within {timeout:.0f} s")
            time.sleep(0.05)

    def failed(self) -> str | None:
        """Which worker ended badly, if one did."""
        for rank, process in enumerate(self.processes, start=1):
            code = process.exitcode
            if code not in (None, 0):
                how = f"signal {-code}" if code < 0 else f"code {code}"
                return f"worker {rank} exited with {how}"
        return None

    def finish(self, timeout: float = 60.0) -> None:
        for process in self.processes:
            process.join(timeout)
        reason = self.failed()
        if reason is not None:
            raise WorkerFailed(reason)

    def stop(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.kill()
        for process in self.processes:
            process.join(30)


@contextlib.contextmanager
def workers(world: int, store: Path, run: Callable[[Group], None]) -> Iterator[Workers]:
    """Start the other ranks; stop whatever is left of them on the way out."""
    for stale in [store, *(_ready(store, rank) for rank in range(1, world))]:
        stale.unlink(missing_ok=True)
    started = Workers(world, store, run)
    try:
        yield started
    finally:
        started.stop()
        leave()


def keep_latest(checkpoint: Path, resume: Path) -> None:
    """Keep a copy of the newest checkpoint where a restarted group reads it (inside the
    job's folder, gone with the job; the sealed copy is what a later attempt resumes from)."""
    staging = resume.with_name(resume.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(checkpoint, staging)
    shutil.rmtree(resume, ignore_errors=True)
    staging.rename(resume)


def keeping_latest(
    resume: Path, on_checkpoint: Callable[[Path, int], None]
) -> Callable[[Path, int], None]:
    """``on_checkpoint`` after keeping a copy of each checkpoint at ``resume``: where a
    group started again (by rank 0 or by Ray Train) resumes."""

    def kept(path: Path, epoch: int) -> None:
        keep_latest(path, resume)
        on_checkpoint(path, epoch)

    return kept


def default_threads(world: int) -> int:
    """Torch threads per worker when the spec does not say: the CPUs shared out."""
    return max(1, (os.cpu_count() or 1) // world)


def worker_device(rank: int, *, gpus: bool) -> torch.device:
    """A rank's device: its own GPU (the job sees one per worker), else the CPU."""
    if not gpus:
        return torch.device("cpu")
    torch.cuda.set_device(rank)
    return torch.device("cuda", rank)
