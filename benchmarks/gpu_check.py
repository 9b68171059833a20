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

Then the trained digits CNN goes through what else a job given a GPU runs there, each on the
device and on the CPU side by side (seconds, and whether the two agree): the PGD robustness
curve (:func:`bastion.evaluate.robustness.evaluate_robustness`, integer pixels), LiRA's
shadow models (:func:`bastion.evaluate.membership.evaluate_membership`), Captum's Integrated
Gradients (:func:`bastion.evaluate.explain.explain_instances`) and the inference server's
forward pass (:class:`bastion.inference.model.ServedModel`).

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from bastion.data.ingest import Loaded
from bastion.data.reference import PATIENT_PII_COLUMNS, digits, patients
from bastion.data.schema import ImageSchema
from bastion.evaluate.attacks import image_lattice
from bastion.evaluate.config import MembershipConfig, RobustnessConfig
from bastion.evaluate.explain import explain_instances
from bastion.evaluate.membership import evaluate_membership
from bastion.evaluate.robustness import evaluate_robustness
from bastion.inference.model import ServedModel
from bastion.train.config import BuiltinModel, PrivacyConfig, TrainConfig
from bastion.train.data import Preprocessing, fit_preprocessing
from bastion.train.models import build_model
from bastion.train.recipe import recipe
from bastion.train.trainer import Trainer

warnings.filterwarnings("ignore")

T = TypeVar("T")


@dataclass(frozen=True)
class Workload:
    name: str
    x: torch.Tensor
    y: torch.Tensor
    model: BuiltinModel
    config: TrainConfig


def _digits_data() -> tuple[Loaded, Preprocessing]:
    images, labels = digits(seed=0)
    data = Loaded(kind="images", images=images, labels=labels)
    return data, fit_preprocessing(data, target=None)


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    data, prep = _digits_data()
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


def _timed(device: torch.device, run: Callable[[], T]) -> tuple[T, float]:
    _sync(device)
    started = time.perf_counter()
    out = run()
    _sync(device)
    return out, time.perf_counter() - started


def evaluation_checks(
    weights: dict[str, torch.Tensor], device: torch.device, *, rows: int | None
) -> list[tuple[str, bool, str]]:
    """The trained digits CNN's evaluations and serving on ``device`` and on the CPU:
    ``(what, agree, figures)`` for each."""
    data, prep = _digits_data()
    x, y = prep.features(data), prep.labels(data)
    if rows is not None:
        x, y = x[:rows], y[:rows]
    half = len(y) // 2

    def model_on(where: torch.device) -> torch.nn.Module:
        model = build_model(BuiltinModel(builtin="cnn"), input_shape=prep.input_shape, classes=10)
        model.load_state_dict(weights)
        return model.to(where).eval()

    lattice = image_lattice(dtype="int64", minimum=0, maximum=16, value_range=prep.value_range)
    robustness = RobustnessConfig(attacks=["pgd"], eps=[2 / 16], steps=20, max_rows=1000)
    membership = MembershipConfig(attack="lira", shadow_models=4, max_rows=400)
    shadow_recipe = TrainConfig(epochs=3 if rows is None else 1, batch_size=64, lr=0.05)
    serve_schema = ImageSchema(shape=[8, 8], dtype="int64", minimum=0, maximum=16, classes=[])

    def one_side(where: torch.device) -> dict[str, tuple[Any, float]]:
        model = model_on(where)
        served = ServedModel("check@1", "", model, prep, serve_schema, {})
        return {
            "pgd": _timed(
                where,
                lambda: evaluate_robustness(
                    model, x, y, robustness, lower=0.0, upper=1.0, lattice=lattice
                ),
            ),
            "lira": _timed(
                where,
                lambda: evaluate_membership(
                    model,
                    train=(x[:half], y[:half]),
                    test=(x[half:], y[half:]),
                    config=membership,
                    model_spec={"builtin": "cnn"},
                    train_config=shadow_recipe.model_dump(mode="json"),
                    classes=10,
                ),
            ),
            "captum": _timed(where, lambda: explain_instances(model, x[:64], prep)),
            "serve": _timed(where, lambda: served.infer(x[:256])),
        }

    checks = []
    side = {where.type: one_side(where) for where in dict.fromkeys([device, torch.device("cpu")])}
    device_side, cpu_side = side[device.type], side["cpu"]
    point = device_side["pgd"][0]["curve"][0], cpu_side["pgd"][0]["curve"][0]
    gap = abs(point[0]["robust_accuracy_integer"] - point[1]["robust_accuracy_integer"])
    checks.append(("PGD robust accuracy (integer pixels)", gap <= 0.01, f"differ by {gap:.4f}"))
    aucs = device_side["lira"][0]["auc"], cpu_side["lira"][0]["auc"]
    checks.append(
        ("LiRA (4 shadows) AUC", abs(aucs[0] - aucs[1]) <= 0.05, f"{aucs[0]:.3f} vs {aucs[1]:.3f}")
    )
    labels = (
        [e["label"] for e in device_side["captum"][0]],
        [e["label"] for e in cpu_side["captum"][0]],
    )
    checks.append(("Captum IG predicted labels", labels[0] == labels[1], f"{len(labels[0])} rows"))
    probabilities = device_side["serve"][0][0], cpu_side["serve"][0][0]
    spread = float((probabilities[0] - probabilities[1]).abs().max())
    checks.append(("served probabilities", spread <= 1e-4, f"max difference {spread:.2e}"))
    for key, what in (("pgd", "PGD"), ("lira", "LiRA"), ("captum", "Captum"), ("serve", "serve")):
        print(
            f"{what}: {device_side[key][1]:.2f} s on {device.type}, {cpu_side[key][1]:.2f} s on cpu"
        )
    return checks


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
    trained: dict[str, dict[str, torch.Tensor]] = {}
    for work in checks:
        first, _, _ = train_once(work, device)
        trained[work.name] = first
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
    agreed = evaluation_checks(trained["digits CNN"], device, rows=rows)
    for what, agree, figures in agreed:
        print(f"{what}: {device.type} and cpu {'agree' if agree else 'DISAGREE'} ({figures})")
    together = sum(agree for _, agree, _ in agreed)
    print(f"device checks: {together}/{len(agreed)} agree with the CPU")
    return 0 if identical == len(checks) and together == len(agreed) else 1


if __name__ == "__main__":
    sys.exit(main())
