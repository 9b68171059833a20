"""The evaluation suite's cost: Bastion's PGD versus IBM ART's, and LiRA's fan-out, in one run.

1. PGD-20, L-infinity, eps 0.1 (step 2.5 * eps / 20) over the digits test set (25%,
   stratified, seed 0) against the reference CNN trained on the rest: Bastion's
   ``bastion.evaluate.attacks.pgd`` versus ART's ``ProjectedGradientDescentPyTorch`` on the
   same model and rows, with and without a random start. ART runs at batch sizes 32 (its
   default), 128 and the whole test set (one batch, as Bastion does); the headline, printed
   last, is ART at its fastest batch over Bastion, the lower of the two starts. Wall time is
   the median of ``--reps`` repetitions; robust accuracy is printed beside it (Bastion's
   early stopping may only lower it).
2. LiRA with 16 shadow models on the patients MLP (the DP-SGD recipe of
   examples/patients.yaml) and on the digits CNN (bench_dp's DP recipe; heavier shadows): the
   whole audit with the local executor's fan-out at width 1 (in the job's own process), with
   2 worker processes always, at width 2 as the agent grants it (the first shadow is timed in
   the job and the rest stay there unless workers save time), and with Ray (a local Ray
   instance on loopback, 2 CPUs, token authentication on); AUC and TPR at 0.1% FPR for each
   (equal up to floating-point differences between thread counts).

    python benchmarks/bench_eval.py [--reps 5] [--shadows 16] [--skip-ray] [--skip-pgd]
                                    [--lira patients digits]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import nn

from bastion.agent.fanout import FanOut, LocalFanOut, RayFanOut
from bastion.data.ingest import Loaded
from bastion.data.reference import PATIENT_PII_COLUMNS, digits, patients
from bastion.evaluate.attacks import Norm, pgd
from bastion.evaluate.config import MembershipConfig
from bastion.evaluate.membership import evaluate_membership
from bastion.evaluate.robustness import accuracy
from bastion.train.config import BuiltinModel, TrainConfig
from bastion.train.data import fit_preprocessing, split_rows
from bastion.train.models import build_model
from bastion.train.recipe import recipe
from bastion.train.trainer import Trainer

EPS, STEPS = 0.1, 20


def _median_seconds(call: Callable[[], Any], reps: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(reps):
        started = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def bench_pgd(reps: int, *, smoke: bool = False) -> float:
    """Print the PGD table; return ART's time at its best batch over Bastion's. ``smoke``:
    a 2-epoch model and 90 test rows (the CI smoke test: it runs, the figures mean nothing)."""
    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    images, labels = digits(seed=0)
    data = Loaded(kind="images", images=images, labels=labels)
    prep = fit_preprocessing(data, target=None)
    x, y = prep.features(data), prep.labels(data)
    train, test = train_test_split(
        np.arange(len(y)), test_size=0.25, random_state=0, stratify=y.numpy()
    )
    torch.manual_seed(0)
    model = build_model(BuiltinModel(builtin="cnn"), input_shape=(1, 8, 8), classes=10)
    Trainer(TrainConfig(epochs=2 if smoke else 10, lr=0.05, holdout=0)).fit(
        model, x[train], y[train]
    )
    model.eval()
    test = test[:90] if smoke else test
    xt, yt = x[test], y[test]
    step = 2.5 * EPS / STEPS
    classifier = PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=(1, 8, 8),
        nb_classes=10,
        clip_values=(0.0, 1.0),
    )
    print(
        f"\nPGD-{STEPS} L-inf eps {EPS} on {len(yt)} digits test images "
        f"(clean accuracy {accuracy(model, xt, yt):.4f}); median of {reps}"
    )
    print(f"{'start':<8}{'implementation':<28}{'seconds':>9}{'robust acc':>12}{'ART/Bastion':>13}")
    ratios: list[float] = []
    for random_start in (False, True):

        def ours(random_start: bool = random_start) -> torch.Tensor:
            return pgd(
                model,
                xt,
                yt,
                eps=EPS,
                steps=STEPS,
                step_size=step,
                norm=Norm.LINF,
                random_start=random_start,
                early_stop=True,  # as the robustness evaluation runs it
                generator=torch.Generator().manual_seed(0),
            )

        seconds, adversarial = _median_seconds(ours, reps)
        label = "random" if random_start else "zero"
        print(
            f"{label:<8}{'Bastion (one batch)':<28}{seconds:>9.3f}"
            f"{accuracy(model, adversarial, yt):>12.4f}{'':>13}"
        )
        best = float("inf")
        for batch in (32, 128, len(yt)):
            attack = ProjectedGradientDescentPyTorch(
                classifier,
                norm=np.inf,
                eps=EPS,
                eps_step=step,
                max_iter=STEPS,
                num_random_init=int(random_start),
                batch_size=batch,
                verbose=False,
            )

            def theirs(attack: Any = attack) -> Any:
                return attack.generate(x=xt.numpy(), y=yt.numpy())

            art_seconds, found = _median_seconds(theirs, reps)
            robust = accuracy(model, torch.from_numpy(found), yt)
            best = min(best, art_seconds)
            name = f"ART (batch {batch})"
            print(
                f"{'':<8}{name:<28}{art_seconds:>9.3f}{robust:>12.4f}"
                f"{art_seconds / seconds:>12.2f}x"
            )
        ratios.append(best / seconds)
    # The headline: ART at its fastest batch size against Bastion's one batch (the whole
    # test set, the same rows); the lower of the two starts.
    return min(ratios)


def _tensors(name: str) -> tuple[Any, ...]:
    """The workload's inputs and labels, split as a training run splits them (20% held out)."""
    if name == "patients":
        frame = patients(seed=0).drop(columns=list(PATIENT_PII_COLUMNS))
        data = Loaded(kind="table", frame=frame)
        prep = fit_preprocessing(data, target="diagnosis")
    else:
        images, labels = digits(seed=0)
        data = Loaded(kind="images", images=images, labels=labels)
        prep = fit_preprocessing(data, target=None)
    x, y = prep.features(data), prep.labels(data)
    _, train, test = split_rows(y, holdout=0.2, seed=0)
    return x, y, train, test, len(prep.classes)


#: The two LiRA workloads: the patients MLP under the DP-SGD recipe of examples/patients.yaml,
#: and the digits CNN under bench_dp's DP-SGD recipe (heavier shadows).
WORKLOADS: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "patients": (
        {"builtin": "mlp", "hidden": [128, 64]},
        {
            "epochs": 20,
            "batch_size": 64,
            "lr": 0.5,
            "momentum": 0.0,
            "privacy": {"target_epsilon": 3.0, "delta": 1e-5, "max_grad_norm": 1.0},
        },
        "MLP 128-64, DP-SGD epsilon 3, 20 epochs",
    ),
    "digits": (
        {"builtin": "cnn", "channels": [8, 16], "activation": "tanh"},
        {
            "epochs": 30,
            "batch_size": 256,
            "lr": 2.0,
            "momentum": 0.0,
            "privacy": {"target_epsilon": 8.0, "delta": 1e-5, "max_grad_norm": 1.0},
        },
        "tanh CNN 8-16, DP-SGD epsilon 8, 30 epochs (bench_dp's recipe)",
    ),
}


def bench_lira(name: str, shadows: int, skip_ray: bool, *, smoke: bool = False) -> None:
    x, y, train_rows, test_rows, classes = _tensors(name)
    spec, config, label = WORKLOADS[name]
    if smoke:  # two epochs, and the fan-outs that differ (width 1 and 2 workers) only
        config, label = {**config, "epochs": 2}, f"{label}; smoke: 2 epochs"
    train = TrainConfig.model_validate(config)
    torch.manual_seed(0)
    model = build_model(
        BuiltinModel.model_validate(spec), input_shape=tuple(x.shape[1:]), classes=classes
    )
    lower, upper = (0.0, 1.0) if x.dim() > 2 else (-10.0, 10.0)
    model, hooks, _ = recipe(model, train, lower=lower, upper=upper)
    result = Trainer(train, hooks).fit(model, x[train_rows], y[train_rows])
    target = result.model.eval()
    epsilon = "none" if result.epsilon is None else f"{result.epsilon:.3f}"
    print(
        f"\nLiRA, {shadows} shadow models ({label}) on {name}: target epsilon {epsilon}, "
        f"held-out accuracy {accuracy(target, x[test_rows], y[test_rows]):.4f}"
    )
    runners: list[tuple[str, Callable[[], FanOut]]] = [
        ("local, width 1", lambda: LocalFanOut(1)),
        ("local, 2 workers", lambda: LocalFanOut(2, worker_start_seconds=0)),
        ("local, width 2", lambda: LocalFanOut(2)),  # as the agent grants it: may stay here
    ]
    runners = runners[:2] if smoke else runners
    if not skip_ray:
        runners.append(("Ray, 2 CPUs", _ray))
    print(f"{'fan-out':<18}{'seconds':>9}{'speed-up':>10}{'AUC':>8}{'TPR@0.1%':>10}{'TPR@1%':>8}")
    baseline = None
    for runner, make in runners:
        fanout = make()
        started = time.perf_counter()
        summary = evaluate_membership(
            target,
            train=(x[train_rows], y[train_rows]),
            test=(x[test_rows], y[test_rows]),
            config=MembershipConfig(attack="lira", shadow_models=shadows),
            model_spec=spec,
            train_config=config,
            classes=classes,
            fanout=fanout,
            epsilon=result.epsilon,
        )
        seconds = time.perf_counter() - started
        baseline = baseline or seconds
        print(
            f"{runner:<18}{seconds:>9.1f}{baseline / seconds:>9.2f}x{summary['auc']:>8.3f}"
            f"{summary['tpr_at_0.1%_fpr']:>10.3f}{summary['tpr_at_1%_fpr']:>8.3f}"
            f"  ({fanout.last_width} at a time)"
        )


def _ray() -> FanOut:
    # A local Ray instance on loopback with token authentication, as Bastion runs Ray
    # everywhere (Ray reads the token when it is imported).
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
        )
    return RayFanOut("local", width=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--shadows", type=int, default=16)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--skip-pgd", action="store_true")
    parser.add_argument("--lira", nargs="*", default=["patients", "digits"], choices=WORKLOADS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny models and rows: checks that it runs"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    ratio = None if args.skip_pgd else bench_pgd(args.reps, smoke=args.smoke)
    for workload in args.lira:
        bench_lira(workload, args.shadows, args.skip_ray, smoke=args.smoke)
    if ratio is not None:
        print(f"\nratio ART PGD at its best batch / Bastion PGD (same rows): {ratio:.2f}x")


if __name__ == "__main__":
    main()
