"""GPU check: Bastion's trainer on ``cuda``, its throughput, and that a seed still fixes the model.

Two reference workloads, trained by :class:`bastion.train.trainer.Trainer` exactly as a train
job given a GPU trains them (model and batches on the device, the noise and attack generators
on it, the model handed back on the CPU):

* digits: scikit-learn's 8x8 digits, the small CNN (16 and 32 channels), no privacy; and the
  same with bf16 mixed precision (``train.mixed_precision: bf16``);
* patients: the breast-cancer features of the patients table, the reference MLP, DP-SGD
  (Opacus, ghost clipping, noise multiplier 1.0, Poisson sampling).

Each is trained twice under the same seed: printed are training rows per second (the second
run: the first pays CUDA's start-up) and whether the two runs end with identical weights
(deterministic seeding on one device type; cuDNN's autotuner is off for jobs).

On a host without a GPU it says so ("no GPU: not yet measured on a GPU") and runs a tiny CPU
pass of the same code, so it still exits 0; docs/benchmarks.md keeps its row marked until the
script has run on a GPU. It exits 1 only when two runs under one seed differ.

    python benchmarks/gpu_check.py [--epochs 20] [--cpu]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import dataclass

import torch

from bastion.data.ingest import Loaded
from bastion.data.reference import PATIENT_PII_COLUMNS, digits, patients
from bastion.train.config import BuiltinModel, PrivacyConfig, TrainConfig
from bastion.train.data import fit_preprocessing
from bastion.train.models import build_model
from bastion.train.recipe import recipe
from bastion.train.trainer import Trainer

warnings.filterwarnings("ignore")


@dataclass(frozen=True)
class Workload:
    name: str
    x: torch.Tensor
    y: torch.Tensor
    model: BuiltinModel
    config: TrainConfig


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = digits(seed=0)
    data = Loaded(kind="images", images=images, labels=labels)
    prep = fit_preprocessing(data, target=None)
    return prep.features(data), prep.labels(data)


def _patients() -> tuple[torch.Tensor, torch.Tensor]:
    frame = patients(seed=0).drop(columns=list(PATIENT_PII_COLUMNS))
    data = Loaded(kind="table", frame=frame)
    prep = fit_preprocessing(data, target="diagnosis")
    return prep.features(data), prep.labels(data)


def workloads(*, epochs: int, rows: int | None) -> list[Workload]:
    dx, dy = _digits()
    px, py = _patients()
    if rows is not None:
        dx, dy, px, py = dx[:rows], dy[:rows], px[:rows], py[:rows]
    cnn = BuiltinModel(builtin="cnn")
    plain = TrainConfig(epochs=epochs, batch_size=64, lr=0.05)
    private = TrainConfig(
        epochs=epochs,
        batch_size=128,
        lr=0.5,
        momentum=0.0,
        privacy=PrivacyConfig(noise_multiplier=1.0, accountant="rdp", mode="ghost"),
    )
    return [
        Workload("digits CNN", dx, dy, cnn, plain),
        Workload(
            "digits CNN, bf16", dx, dy, cnn, plain.model_copy(update={"mixed_precision": "bf16"})
        ),
        Workload("patients MLP, DP-SGD", px, py, BuiltinModel(builtin="mlp"), private),
    ]


def train_once(
    work: Workload, device: torch.device
) -> tuple[dict[str, torch.Tensor], float, float]:
    """One training run as a train job does it: (weights, seconds, final accuracy)."""
    torch.manual_seed(work.config.seed)
    model = build_model(
        work.model, input_shape=tuple(work.x.shape[1:]), classes=int(work.y.max()) + 1
    )
    model, hooks, _ = recipe(
        model, work.config, lower=work.x.min().item(), upper=work.x.max().item()
    )
    _sync(device)
    started = time.perf_counter()
    result = Trainer(work.config, hooks, device=device).fit(model, work.x, work.y)
    _sync(device)
    seconds = time.perf_counter() - started
    weights = {k: v.detach().clone() for k, v in result.model.state_dict().items()}
    return weights, seconds, result.history[-1]["accuracy"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _same(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--cpu", action="store_true", help="Run the tiny CPU pass anyway.")
    args = parser.parse_args(argv)
    if torch.cuda.is_available() and not args.cpu:
        device = torch.device("cuda")
        torch.backends.cudnn.deterministic = True  # as bastion.train.device sets it for jobs
        torch.backends.cudnn.benchmark = False
        print(f"device: cuda ({torch.cuda.get_device_name(0)}), torch {torch.__version__}")
        epochs, rows = args.epochs, None
    else:
        device = torch.device("cpu")
        print("no GPU: not yet measured on a GPU")
        print("a tiny CPU pass of the same code follows (it measures nothing)")
        epochs, rows = 1, 256
    identical = 0
    checks = workloads(epochs=epochs, rows=rows)
    for work in checks:
        first, _, _ = train_once(work, device)
        second, seconds, accuracy = train_once(work, device)
        same = _same(first, second)
        identical += same
        rate = len(work.y) * work.config.epochs / seconds
        print(
            f"{work.name}: {rate:,.0f} rows/s on {device.type} ({seconds:.2f} s, "
            f"{work.config.epochs} epochs), train accuracy {accuracy:.3f}, "
            f"same seed twice -> {'identical weights' if same else 'DIFFERENT weights'}"
        )
    print(f"equality checks: {identical}/{len(checks)} identical on {device.type}")
    return 0 if identical == len(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
