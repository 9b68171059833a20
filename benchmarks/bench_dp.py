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
   with the ratio to non-private; then the default mode with its privacy accounting (the
   epsilon reported after every epoch) added to the epoch. The accounting is also timed
   alone: as it runs (Opacus's per-order RDP remembered) and cold (as Opacus computes it).
2. test accuracy at epsilon 1, 3 and 8 (delta 1e-5; noise calibrated by Opacus for the run's
   epochs and sampling rate, Poisson sampling, PRV accountant) versus non-private.

The baseline is a bare Opacus training loop on the same model, rows, batch size, optimiser
and budget (epsilon 8, ghost clipping): the last line is Bastion's DP epoch over its epoch.

Then, on random inputs, the cost of one ghost-clipping step against one non-private step as
the MLP grows: the fixed per-step work of Opacus stops mattering, and the ratio settles near
what ghost clipping costs by construction (a second backward pass).

    python benchmarks/bench_dp.py [--reps 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.accountants import PRVAccountant
from opacus.accountants.analysis import rdp
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader

from bastion.data.ingest import Loaded
from bastion.data.reference import PATIENT_PII_COLUMNS, digits, patients
from bastion.train.config import BuiltinModel, PrivacyConfig, TrainConfig
from bastion.train.data import fit_preprocessing
from bastion.train.dp_sgd import PrivacyHook
from bastion.train.models import build_model
from bastion.train.trainer import Event, Hook, Rows, Trainer, TrainState, batch_as_is

MODES = ("ghost", "hooks", "functorch", "ew")
EPSILONS = (1.0, 3.0, 8.0)
#: (hidden widths, batch size) of the MLPs in the scaling table.
SCALING = (((128, 64), 64), ((512, 512), 256), ((1024, 1024), 1024))


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


def _plain_opacus(work: Workload, config: TrainConfig) -> tuple[list[float], float]:
    """The baseline: the same model, rows, batch size, optimiser and privacy as Bastion's
    DP run, trained by a bare Opacus loop (make_private_with_epsilon, Poisson sampling, ghost
    clipping); seconds per epoch and test accuracy."""
    assert config.privacy is not None and config.privacy.target_epsilon is not None
    torch.manual_seed(config.seed)
    model = build_model(
        work.model, input_shape=tuple(work.x.shape[1:]), classes=int(work.y.max()) + 1
    )
    loader = DataLoader(
        Rows(work.x, work.y), batch_size=config.batch_size, shuffle=True, collate_fn=batch_as_is
    )
    model, optimizer, criterion, loader = PrivacyEngine(
        accountant=config.privacy.accountant
    ).make_private_with_epsilon(
        module=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum),
        data_loader=loader,
        criterion=nn.CrossEntropyLoss(),
        target_epsilon=config.privacy.target_epsilon,
        target_delta=config.privacy.delta,
        epochs=config.epochs,
        max_grad_norm=config.privacy.max_grad_norm,
        poisson_sampling=True,
        grad_sample_mode="ghost",
    )
    epochs = []
    for _ in range(config.epochs):
        model.train()
        started = time.perf_counter()
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
        epochs.append(time.perf_counter() - started)
    model.eval()
    with torch.no_grad():
        accuracy = float((model(work.test_x).argmax(1) == work.test_y).float().mean())
    return epochs, accuracy


def _baselines(
    work: Workload, rep: int, timings: dict[str, list[float]], accuracy: dict[str, list[float]]
) -> None:
    """The bare Opacus loop doing the same DP work (same batch, epsilon 8), and Bastion's DP
    run at the non-private run's batch size (the DP rows use their own)."""
    bare = _private(work.private.model_copy(update={"seed": rep}), target_epsilon=8.0)
    bare_epochs, bare_accuracy = _plain_opacus(work, bare)
    timings.setdefault("plain Opacus loop, ghost", []).extend(bare_epochs)
    accuracy.setdefault("plain Opacus, eps 8", []).append(bare_accuracy)
    same = _private(
        work.private.model_copy(update={"seed": rep, "batch_size": work.plain.batch_size}),
        target_epsilon=8.0,
    )
    timings.setdefault(f"DP ghost, b={work.plain.batch_size}", []).extend(_fit(work, same)[0])


def _private(config: TrainConfig, **privacy: object) -> TrainConfig:
    return config.model_copy(update={"privacy": PrivacyConfig.model_validate(privacy)})


def _cold_accounting(epochs: int, steps: int, sample_rate: float, sigma: float) -> float:
    """Seconds for one epsilon as Opacus computes it, without the remembered RDP."""
    accountant = PRVAccountant()
    for _ in range(epochs * steps):
        accountant.step(noise_multiplier=sigma, sample_rate=sample_rate)
    remembered = rdp._compute_rdp
    rdp._compute_rdp = remembered.__wrapped__
    try:
        started = time.perf_counter()
        accountant.get_epsilon(1e-5)
        return time.perf_counter() - started
    finally:
        rdp._compute_rdp = remembered


def _step_ms(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
) -> float:
    times = []
    for index in range(40):
        x, y = batches[index % len(batches)]
        started = time.perf_counter()
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times[5:])


def _scaling(reps: int, sizes: tuple[tuple[tuple[int, int], int], ...] = SCALING) -> None:
    print("== ghost clipping step versus non-private step, MLP on 30 random features")
    print(f"{'hidden':<12} {'batch':>6} {'non-private ms':>15} {'DP ghost ms':>12} {'ratio':>7}")
    generator = torch.Generator().manual_seed(0)
    for hidden, batch in sizes:
        x = torch.randn(4 * batch, 30, generator=generator)
        y = torch.randint(0, 2, (4 * batch,), generator=generator)
        batches = [(x[i : i + batch], y[i : i + batch]) for i in range(0, len(y), batch)]
        spec = BuiltinModel(builtin="mlp", hidden=list(hidden))
        plain, private = [], []
        for _ in range(reps):
            torch.manual_seed(0)
            model = build_model(spec, input_shape=(30,), classes=2)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            plain.append(_step_ms(model, optimizer, nn.CrossEntropyLoss(), batches))
            torch.manual_seed(0)
            model = build_model(spec, input_shape=(30,), classes=2)
            loader = DataLoader(Rows(x, y), batch_size=batch, collate_fn=batch_as_is)
            wrapped, optimizer, criterion, _ = PrivacyEngine().make_private(
                module=model,
                optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                data_loader=loader,
                criterion=nn.CrossEntropyLoss(),
                noise_multiplier=1.0,
                max_grad_norm=1.0,
                grad_sample_mode="ghost",
            )
            private.append(_step_ms(wrapped, optimizer, criterion, batches))
        base, dp = statistics.median(plain), statistics.median(private)
        label = "x".join(str(width) for width in hidden)
        print(f"{label:<12} {batch:>6} {base:>15.2f} {dp:>12.2f} {dp / base:>6.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--smoke", action="store_true", help="one mode, one epsilon, the smallest size (CI)"
    )
    args = parser.parse_args()
    modes, epsilons = (MODES[:1], EPSILONS[:1]) if args.smoke else (MODES, EPSILONS)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    print(f"torch {torch.__version__}, {args.threads} thread(s); medians of {args.reps} runs\n")
    workloads = _workloads()
    if args.smoke:  # two epochs on 400 rows each: that every path runs, not how fast
        workloads = [
            dataclasses.replace(
                work,
                x=work.x[:400],
                y=work.y[:400],
                plain=work.plain.model_copy(update={"epochs": 2}),
                private=work.private.model_copy(update={"epochs": 2}),
            )
            for work in workloads
        ]
    headlines: list[tuple[str, float]] = []
    for work in workloads:
        print(f"== {work.name}: {len(work.y)} training rows, {len(work.test_y)} test rows")
        timings: dict[str, list[float]] = {}
        accounting: list[float] = []
        with_accounting: list[float] = []
        accuracy: dict[str, list[float]] = {}
        for rep in range(args.reps):
            plain = work.plain.model_copy(update={"seed": rep})
            epochs, _, acc = _fit(work, plain)
            timings.setdefault("non-private", []).extend(epochs)
            accuracy.setdefault("non-private", []).append(acc)
            for mode in modes:
                config = _private(
                    work.private.model_copy(update={"seed": rep}), target_epsilon=8.0, mode=mode
                )
                epochs, spent, acc = _fit(work, config)
                timings.setdefault(f"DP {mode}", []).extend(epochs)
                accounting.extend(spent)
                if mode == MODES[0]:
                    with_accounting.extend(e + a for e, a in zip(epochs, spent, strict=True))
            _baselines(work, rep, timings, accuracy)
            for epsilon in epsilons:
                config = _private(
                    work.private.model_copy(update={"seed": rep}), target_epsilon=epsilon
                )
                accuracy.setdefault(f"epsilon {epsilon:g}", []).append(_fit(work, config)[2])
        timings[f"DP {MODES[0]} + accounting"] = with_accounting
        base = statistics.median(timings["non-private"])
        bare = statistics.median(timings["plain Opacus loop, ghost"])
        headlines.append((work.name, statistics.median(timings[f"DP {MODES[0]}"]) / bare))
        print(f"{'training':<26} {'s/epoch':>9} {'ratio':>7}")
        for label, values in timings.items():
            median = statistics.median(values)
            print(f"{label:<26} {median:>9.4f} {median / base:>6.2f}x")
        private = work.private
        steps = -(-len(work.y) // private.batch_size)
        cold = [_cold_accounting(private.epochs, steps, 1 / steps, 1.0) for _ in range(args.reps)]
        print(f"{'accounting, per epoch':<26} {statistics.median(accounting):>9.4f}")
        print(
            f"{'accounting, Opacus cold':<26} {statistics.median(cold):>9.4f}  (no remembered RDP)"
        )
        print(f"{'accuracy':<16} {'test':>9} {'vs non-private':>16}")
        reference = statistics.median(accuracy["non-private"])
        for label, values in accuracy.items():
            median = statistics.median(values)
            print(f"{label:<16} {median:>9.4f} {100 * (median - reference):>+15.1f} pt")
        print()
    _scaling(args.reps, SCALING[:1] if args.smoke else SCALING)
    _headline(headlines)


def _headline(headlines: list[tuple[str, float]]) -> None:
    """Bastion's trainer against the bare Opacus loop, the same DP work (ghost, same batch)."""
    for name, ratio in headlines:
        print(f"{name}: Bastion DP epoch / plain Opacus epoch {ratio:.2f}x")
    overall = statistics.median(ratio for _, ratio in headlines)
    print(f"ratio Bastion DP-SGD / plain Opacus loop (median of workloads): {overall:.2f}x")


if __name__ == "__main__":
    main()
