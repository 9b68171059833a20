"""DP-SGD cost and utility: Bastion's trainer without privacy versus with Opacus, in one run.

Two reference workloads, each split 75/25 (stratified, seed 0):

* patients: the breast-cancer features of the patients table (identifiers left out),
  the reference MLP (hidden 128, 64);
* digits: scikit-learn's 8x8 digits, the small CNN with 8 and 16 channels and tanh
  activations (fewer weights take less noise, bounded activations suit clipping; without
  privacy it is as accurate as the default 16/32 ReLU CNN).

Private runs use their own hyperparameters (larger learning rate, no momentum, more epochs
and, for digits, larger batches: what DP-SGD needs), found by a small grid search.

Printed per workload:

1. seconds per training epoch, median over epochs and repetitions: non-private, and DP-SGD in
   each Opacus per-sample-gradient mode (ghost clipping, hooks, functorch, expanded weights)
   with the private run's own batch size, and ghost clipping at the non-private batch size,
   with the ratio to non-private. Privacy accounting (one epsilon per epoch) is timed apart.
2. test accuracy at epsilon 1, 3 and 8 (delta 1e-5; noise calibrated by Opacus for the run's
   epochs and sampling rate, Poisson sampling, PRV accountant) versus non-private.

    python benchmarks/bench_dp.py [--reps 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from bastion.data.ingest import Loaded
from bastion.data.reference import PATIENT_PII_COLUMNS, digits, patients
from bastion.train.config import BuiltinModel, PrivacyConfig, TrainConfig
from bastion.train.data import fit_preprocessing
from bastion.train.models import build_model
from bastion.train.privacy import PrivacyHook
from bastion.train.trainer import Event, Hook, Trainer, TrainState

MODES = ("ghost", "hooks", "functorch", "ew")
EPSILONS = (1.0, 3.0, 8.0)


@dataclass
class Workload:
    name: str
    x: torch.Tensor
    y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    model: BuiltinModel
    plain: TrainConfig
    private: TrainConfig  # its privacy block is replaced per measurement


class _EpochClock:
    """Times the training part of each epoch (fires before the privacy accounting)."""

    def __init__(self) -> None:
        self.epochs: list[float] = []
        self._started = 0.0

    def __call__(self, event: Event, state: TrainState) -> None:
        if event is Event.EPOCH_START:
            self._started = time.perf_counter()
        elif event is Event.EPOCH_END:
            self.epochs.append(time.perf_counter() - self._started)


class _AccountingClock:
    def __init__(self, inner: PrivacyHook) -> None:
        self.inner = inner
        self.seconds: list[float] = []

    def __call__(self, event: Event, state: TrainState) -> None:
        started = time.perf_counter()
        self.inner(event, state)
        if event is Event.EPOCH_END:
            self.seconds.append(time.perf_counter() - started)


def _split(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    index = np.arange(len(y))
    train, test = train_test_split(index, test_size=0.25, stratify=y.numpy(), random_state=0)
    return x[train], y[train], x[test], y[test]


def _workloads() -> list[Workload]:
    frame = patients(seed=0).drop(columns=list(PATIENT_PII_COLUMNS))
    table = Loaded(kind="table", frame=frame)
    prep = fit_preprocessing(table, target="diagnosis")
    px, py, ptx, pty = _split(prep.features(table), prep.labels(table))
    images, labels = digits(seed=0)
    pictures = Loaded(kind="images", images=images, labels=labels)
    prep = fit_preprocessing(pictures, target=None)
    dx, dy, dtx, dty = _split(prep.features(pictures), prep.labels(pictures))
    return [
        Workload(
            "patients MLP",
            px,
            py,
            ptx,
            pty,
            BuiltinModel(builtin="mlp"),
            TrainConfig(epochs=20, batch_size=64, lr=0.05),
            TrainConfig(epochs=20, batch_size=64, lr=0.5, momentum=0.0),
        ),
        Workload(
            "digits CNN",
            dx,
            dy,
            dtx,
            dty,
            BuiltinModel(builtin="cnn", channels=[8, 16], activation="tanh"),
            TrainConfig(epochs=15, batch_size=64, lr=0.05),
            TrainConfig(epochs=30, batch_size=256, lr=2.0, momentum=0.0),
        ),
    ]


def _fit(work: Workload, config: TrainConfig) -> tuple[list[float], list[float], float]:
    torch.manual_seed(config.seed)
    model = build_model(
        work.model, input_shape=tuple(work.x.shape[1:]), classes=int(work.y.max()) + 1
    )
    clock = _EpochClock()
    hooks: list[Hook] = [clock]
    accounting = None
    if config.privacy is not None:
        accounting = _AccountingClock(PrivacyHook(config.privacy))
        hooks.append(accounting)
    result = Trainer(config, hooks).fit(model, work.x, work.y)
    result.model.eval()
    with torch.no_grad():
        accuracy = float((result.model(work.test_x).argmax(1) == work.test_y).float().mean())
    return clock.epochs, accounting.seconds if accounting else [], accuracy


def _private(config: TrainConfig, **privacy: object) -> TrainConfig:
    return config.model_copy(update={"privacy": PrivacyConfig.model_validate(privacy)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    print(f"torch {torch.__version__}, {args.threads} thread(s); medians of {args.reps} runs\n")
    for work in _workloads():
        print(f"== {work.name}: {len(work.y)} training rows, {len(work.test_y)} test rows")
        timings: dict[str, list[float]] = {}
        accounting: list[float] = []
        accuracy: dict[str, list[float]] = {}
        for rep in range(args.reps):
            plain = work.plain.model_copy(update={"seed": rep})
            epochs, _, acc = _fit(work, plain)
            timings.setdefault("non-private", []).extend(epochs)
            accuracy.setdefault("non-private", []).append(acc)
            for mode in MODES:
                config = _private(
                    work.private.model_copy(update={"seed": rep}), target_epsilon=8.0, mode=mode
                )
                epochs, spent, acc = _fit(work, config)
                timings.setdefault(f"DP {mode}", []).extend(epochs)
                accounting.extend(spent)
            # The same batch size as the non-private run (the DP rows above use their own).
            same = _private(
                work.private.model_copy(update={"seed": rep, "batch_size": work.plain.batch_size}),
                target_epsilon=8.0,
            )
            timings.setdefault(f"DP ghost, b={work.plain.batch_size}", []).extend(
                _fit(work, same)[0]
            )
            for epsilon in EPSILONS:
                config = _private(
                    work.private.model_copy(update={"seed": rep}), target_epsilon=epsilon
                )
                accuracy.setdefault(f"epsilon {epsilon:g}", []).append(_fit(work, config)[2])
        base = statistics.median(timings["non-private"])
        print(f"{'training':<22} {'s/epoch':>9} {'ratio':>7}")
        for label, values in timings.items():
            median = statistics.median(values)
            print(f"{label:<22} {median:>9.4f} {median / base:>6.2f}x")
        print(f"{'(accounting)':<16} {statistics.median(accounting):>9.4f}  per epoch, any mode")
        print(f"{'accuracy':<16} {'test':>9} {'vs non-private':>16}")
        reference = statistics.median(accuracy["non-private"])
        for label, values in accuracy.items():
            median = statistics.median(values)
            print(f"{label:<16} {median:>9.4f} {100 * (median - reference):>+15.1f} pt")
        print()


if __name__ == "__main__":
    main()
