"""Data-parallel training: epoch time with 1 and 2 workers, Bastion beside a plain DDP loop.

Work (the same on both sides, in the same run): the reference patients table resampled to
``--rows`` rows (identifiers left out, one-hot/standardised as a training job does), the
reference MLP (hidden 128, 64), SGD, global batch ``--batch``, ``--epochs`` epochs, gloo on
the CPU. With one worker a process uses every thread (``--threads``); with two, each uses
half.

* **Bastion**: ``Trainer.fit`` for one worker; :func:`bastion.train.parallel.fit_parallel`
  for two, exactly as a training job calls it (worker processes spawned, a file-store
  rendezvous, DDP, every rank's share of each global batch, epoch metrics summed over ranks,
  a checkpoint with every rank's random state after each epoch).
* **Baseline**: a plain ``torch.distributed`` loop: ``torch.multiprocessing.spawn``, gloo,
  ``DistributedSampler`` over the same rows, DDP, per-rank batch = global / 2; no metrics
  reduced, no checkpoints. One worker: the same loop without DDP.

Printed: the median steady epoch time (epochs after the first, over ``--repeats`` runs) of each
side with 1 and 2 workers, each side's speed-up from the second worker (on a host with two
cores, each worker has one), and last the ratio of Bastion's 2-worker epoch to the
baseline's: Bastion's own overhead in data-parallel training.

    python benchmarks/bench_scale.py [--rows 60000] [--epochs 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler, TensorDataset

from bastion.data.ingest import Loaded
from bastion.data.reference import PATIENT_PII_COLUMNS, patients
from bastion.train.config import BuiltinModel, TrainConfig
from bastion.train.data import fit_preprocessing
from bastion.train.models import build_model
from bastion.train.parallel import fit_parallel
from bastion.train.trainer import Event, Trainer, TrainState


def _data(rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    frame = patients(seed=0, rows=rows).drop(columns=list(PATIENT_PII_COLUMNS))
    table = Loaded(kind="table", frame=frame)
    prep = fit_preprocessing(table, target="diagnosis")
    return prep.features(table), prep.labels(table)


def _model(inputs: int) -> nn.Module:
    torch.manual_seed(0)
    spec = BuiltinModel(builtin="mlp", hidden=[128, 64])
    return build_model(spec, input_shape=(inputs,), classes=2)


class _Clock:
    """Rank 0's hook: when each epoch ended."""

    def __init__(self) -> None:
        self.ends: list[float] = [time.perf_counter()]

    def __call__(self, event: Event, state: TrainState) -> None:
        if event is Event.FIT_START:
            self.ends = [time.perf_counter()]
        elif event is Event.EPOCH_END:
            self.ends.append(time.perf_counter())


def _steady(ends: list[float]) -> float:
    """Median epoch time after the first epoch (which pays for warm-up)."""
    times = [b - a for a, b in itertools.pairwise(ends)]
    return statistics.median(times[1:] if len(times) > 1 else times)


def bastion(
    config: TrainConfig, x: torch.Tensor, y: torch.Tensor, workers: int, threads: int
) -> float:
    clock = _Clock()
    model = _model(x.shape[1])
    torch.set_num_threads(threads if workers == 1 else max(1, threads // workers))
    if workers == 1:
        Trainer(config, [clock]).fit(model, x, y)
        return _steady(clock.ends)
    with tempfile.TemporaryDirectory() as folder:
        fit_parallel(
            config,
            model,
            x,
            y,
            world=workers,
            hooks=lambda: [clock],
            gpus=False,
            lower=0.0,
            upper=1.0,
            folder=Path(folder),
            resume=None,
            on_checkpoint=lambda _path, _epoch: None,
            restarts=0,
            threads=max(1, threads // workers),
            say=print,
        )
    return _steady(clock.ends)


@dataclass(frozen=True)
class _Plain:
    """The baseline's job: what each of its ranks trains on."""

    world: int
    store: str
    x: torch.Tensor
    y: torch.Tensor
    config: TrainConfig
    threads: int
    out: str


def _plain_rank(rank: int, job: _Plain) -> None:
    """The baseline's worker: a textbook DDP loop (batches sliced from the tensors by the
    sampler's indices, as Bastion's loader does, so the loaders cost the same)."""
    config, world = job.config, job.world
    torch.set_num_threads(job.threads)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    if world > 1:
        store = dist.FileStore(job.store, world)  # type: ignore[attr-defined]
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
    model: nn.Module = _model(job.x.shape[1])
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model)
    sampler: DistributedSampler[Any] = DistributedSampler(
        TensorDataset(job.y), num_replicas=world, rank=rank, seed=config.seed
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    per_rank = config.batch_size // world
    ends = [time.perf_counter()]
    for epoch in range(config.epochs):
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler))
        for start in range(0, len(order), per_rank):
            rows = order[start : start + per_rank]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(job.x[rows]), job.y[rows])
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
        ends.append(time.perf_counter())
    if rank == 0:
        Path(job.out).write_text(repr(_steady(ends)))
    if world > 1:
        dist.destroy_process_group()


def plain(
    config: TrainConfig, x: torch.Tensor, y: torch.Tensor, workers: int, threads: int
) -> float:
    with tempfile.TemporaryDirectory() as folder:
        each = threads if workers == 1 else max(1, threads // workers)
        job = _Plain(workers, f"{folder}/store", x, y, config, each, f"{folder}/epoch")
        if workers == 1:
            _plain_rank(0, job)
        else:
            spawn: Any = torch.multiprocessing.spawn  # type: ignore[attr-defined]
            spawn(_plain_rank, args=(job,), nprocs=workers, join=True)
        return float(Path(job.out).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    x, y = _data(args.rows)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=0.05, seed=0)
    print(
        f"{len(y)} rows x {x.shape[1]} inputs, MLP 128-64, global batch {args.batch}, "
        f"{args.epochs} epochs, {args.threads} threads in all, {args.repeats} repeats"
    )
    figures: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.repeats):
        for workers in (1, 2):
            for side, train in (("bastion", bastion), ("baseline", plain)):
                taken = train(copy.copy(config), x, y, workers, args.threads)
                figures.setdefault((side, workers), []).append(taken)
    median = {key: statistics.median(values) for key, values in figures.items()}
    for side in ("bastion", "baseline"):
        one, two = median[(side, 1)], median[(side, 2)]
        print(
            f"{side:8s}  1 worker {one:.3f} s/epoch   2 workers {two:.3f} s/epoch   "
            f"speed-up {one / two:.2f}x (efficiency {one / two / 2:.0%})"
        )
    alone = median[("bastion", 1)] / median[("baseline", 1)]
    print(f"Bastion/baseline epoch time, 1 worker: {alone:.2f}x")
    ratio = median[("bastion", 2)] / median[("baseline", 2)]
    print(f"ratio Bastion/baseline epoch time (2 workers): {ratio:.2f}x")


if __name__ == "__main__":
    main()
