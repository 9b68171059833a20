"""The evaluation suite's numbers: checked against ART, known disparities and known causes."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from bastion.agent.fanout import LocalFanOut, fanout_from_environment
from bastion.errors import ConfigurationError
from bastion.evaluate.attacks import Norm, input_bounds, pgd
from bastion.evaluate.config import (
    EvaluateConfig,
    ExplainConfig,
    FairnessConfig,
    MembershipConfig,
    RobustnessConfig,
)
from bastion.evaluate.explain import evaluate_explanations
from bastion.evaluate.fairness import POOLED, evaluate_fairness
from bastion.evaluate.membership import evaluate_membership
from bastion.evaluate.robustness import accuracy, evaluate_robustness
from bastion.train.config import BuiltinModel, TrainConfig
from bastion.train.data import Preprocessing
from bastion.train.models import build_model
from bastion.train.recipe import recipe
from bastion.train.trainer import Trainer, TrainResult


@pytest.fixture(scope="module")
def digits_model(
    digits_tensors: tuple[torch.Tensor, torch.Tensor],
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    x, y = digits_tensors
    torch.manual_seed(0)
    model = build_model(BuiltinModel(builtin="cnn"), input_shape=(1, 8, 8), classes=10)
    Trainer(TrainConfig(epochs=8, lr=0.05)).fit(model, x[:1400], y[:1400])
    return model.eval(), x[1400:], y[1400:]


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 0.5)])
def test_pgd_matches_art_within_one_point(
    digits_model: tuple[nn.Module, torch.Tensor, torch.Tensor], norm: str, eps: float
) -> None:
    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    model, x, y = digits_model
    step = 2.5 * eps / 20
    ours = pgd(model, x, y, eps=eps, steps=20, step_size=step, norm=Norm(norm), random_start=False)
    classifier = PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=(1, 8, 8),
        nb_classes=10,
        clip_values=(0.0, 1.0),
    )
    reference = ProjectedGradientDescentPyTorch(
        classifier,
        norm=np.inf if norm == "linf" else 2,
        eps=eps,
        eps_step=step,
        max_iter=20,
        num_random_init=0,
        batch_size=128,
        verbose=False,
    )
    theirs = torch.from_numpy(reference.generate(x=x.numpy(), y=y.numpy()))
    clean = accuracy(model, x, y)
    ours_accuracy, art_accuracy = accuracy(model, ours, y), accuracy(model, theirs, y)
    assert ours_accuracy < clean - 0.2  # the attack bites ...
    assert abs(ours_accuracy - art_accuracy) <= 0.01  # ... exactly as hard as ART's
    # Stopping each example at its first success (what the evaluation runs) is no weaker.
    stopped = pgd(
        model,
        x,
        y,
        eps=eps,
        steps=20,
        step_size=step,
        norm=Norm(norm),
        random_start=False,
        early_stop=True,
    )
    assert accuracy(model, stopped, y) <= ours_accuracy
    assert abs(accuracy(model, stopped, y) - art_accuracy) <= 0.01
    assert float((stopped - x).abs().max() if norm == "linf" else 0.0) <= eps + 1e-6


def test_robustness_curve_falls_with_eps_and_pgd_beats_fgsm(
    digits_model: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x, y = digits_model
    config = RobustnessConfig(eps=[0.02, 0.1, 0.3], steps=10, restarts=2, max_rows=300)
    summary = evaluate_robustness(model, x, y, config, lower=0.0, upper=1.0)
    assert summary["rows"] == 300 and summary["restarts"] == 2
    curve = {(p["attack"], p["eps"]): p["robust_accuracy"] for p in summary["curve"]}
    assert len(curve) == 6
    pgd_curve = [curve[("pgd", eps)] for eps in (0.02, 0.1, 0.3)]
    assert pgd_curve == sorted(pgd_curve, reverse=True)
    assert pgd_curve[0] <= summary["clean_accuracy"] and pgd_curve[-1] < 0.2
    for eps in (0.1, 0.3):
        assert curve[("pgd", eps)] <= curve[("fgsm", eps)]
    l2 = evaluate_robustness(
        model, x, y, RobustnessConfig(norm="l2", eps=[0.5], max_rows=100), lower=0.0, upper=1.0
    )
    assert [p["attack"] for p in l2["curve"]] == ["pgd"]  # FGSM is an L-infinity attack


def test_table_attacks_respect_each_features_range() -> None:
    torch.manual_seed(0)
    x = torch.cat([torch.randn(200, 2), torch.randint(0, 2, (200, 1)).float()], dim=1)
    y = (x[:, 0] > 0).long()
    model = build_model(BuiltinModel(builtin="logreg"), input_shape=(3,), classes=2)
    Trainer(TrainConfig(epochs=5, holdout=0)).fit(model, x, y)
    lower, upper = input_bounds(x, images=False)
    assert isinstance(lower, torch.Tensor) and isinstance(upper, torch.Tensor)
    attacked = pgd(model.eval(), x, y, eps=3.0, steps=5, lower=lower, upper=upper)
    assert bool((attacked >= lower).all()) and bool((attacked <= upper).all())
    assert float(attacked[:, 2].min()) >= 0.0 and float(attacked[:, 2].max()) <= 1.0


def _mlp_split(
    rows: int, seed: int
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=rows, n_features=20, n_informative=5, flip_y=0.3, random_state=seed
    )
    xt = torch.from_numpy(((x - x.mean(0)) / x.std(0)).astype(np.float32))
    yt = torch.from_numpy(y.astype(np.int64))
    half = rows // 2
    return (xt[:half], yt[:half]), (xt[half:], yt[half:])


def _train(
    spec: dict[str, Any], config: dict[str, Any], x: torch.Tensor, y: torch.Tensor
) -> TrainResult:
    train = TrainConfig.model_validate(config)
    torch.manual_seed(train.seed)
    model = build_model(BuiltinModel.model_validate(spec), input_shape=(20,), classes=2)
    model, hooks, _ = recipe(model, train, lower=-5.0, upper=5.0)
    return Trainer(train, hooks).fit(model, x, y)


def test_lira_finds_the_members_of_an_overfit_model() -> None:
    """Measured: TPR at 1% FPR 0.22 (online LiRA), 0.16 (offline); AUC 0.82."""
    train, test = _mlp_split(600, seed=0)
    spec: dict[str, Any] = {"builtin": "mlp", "hidden": [128, 128]}
    config = {"epochs": 60, "batch_size": 32, "lr": 0.01, "optimizer": "adam", "holdout": 0}
    result = _train(spec, config, *train)
    assert result.history[-1]["accuracy"] == 1.0  # memorised, label noise and all
    summary = evaluate_membership(
        result.model,
        train=train,
        test=test,
        config=MembershipConfig(attack="lira", shadow_models=16),
        model_spec=spec,
        train_config=config,
        classes=2,
        fanout=LocalFanOut(2, worker_start_seconds=0),  # workers, however fast
    )
    assert summary["rows"] == 600 and summary["members"] == 300
    assert summary["shadow_models"] == 16 and summary["fanout_width"] == 2
    assert summary["lira_online"]["tpr_at_1%_fpr"] > 0.10  # ten times chance
    assert summary["lira_offline"]["tpr_at_1%_fpr"] > 0.05
    assert summary["lira_online"]["auc"] > summary["loss"]["auc"] > 0.6
    assert summary["auc"] == summary["lira_online"]["auc"]
    roc = summary["lira_online"]["roc"]
    assert roc[0][0] == pytest.approx(1e-4) and roc[-1] == [1.0, 1.0]


def test_dp_at_epsilon_one_leaves_the_attack_at_chance() -> None:
    train, test = _mlp_split(600, seed=1)
    spec: dict[str, Any] = {"builtin": "mlp", "hidden": [64]}
    config = {
        "epochs": 10,
        "batch_size": 64,
        "lr": 0.05,
        "holdout": 0,
        "privacy": {"target_epsilon": 1.0, "max_grad_norm": 1.0},
    }
    result = _train(spec, config, *train)
    assert result.epsilon is not None and result.epsilon <= 1.0 + 1e-6
    summary = evaluate_membership(
        result.model,
        train=train,
        test=test,
        config=MembershipConfig(attack="lira", shadow_models=6),
        model_spec=spec,
        train_config=config,
        classes=2,
        fanout=LocalFanOut(2, worker_start_seconds=0),  # workers, however fast
        epsilon=result.epsilon,
    )
    assert summary["epsilon"] == result.epsilon
    assert summary["shadow_noise_multiplier"] > 0.5  # calibrated once, for the shadows' size
    for attack in ("loss", "lira_online", "lira_offline"):
        assert abs(summary[attack]["auc"] - 0.5) < 0.06, (attack, summary[attack]["auc"])


def test_fairness_reports_the_disparity_it_was_given() -> None:
    generator = np.random.default_rng(0)
    group = np.array(["a"] * 500 + ["b"] * 500 + ["c"] * 3)
    y_true = generator.integers(0, 2, len(group))
    # group a: always predicted positive; group b: predictions are the truth
    y_pred = np.where(group == "a", 1, y_true)
    ages = pd.Series(generator.integers(18, 90, len(group)))
    summary = evaluate_fairness(
        y_true,
        y_pred,
        {"group": pd.Series(group), "age": ages},
        classes=["no", "yes"],
        config=FairnessConfig(min_group_size=10),
    )
    assert summary["positive_class"] == "yes" and summary["rows"] == len(group)
    by_group = {row["group"]: row for row in summary["features"]["group"]["groups"]}
    assert set(by_group) == {"a", "b", POOLED}  # the three rows of c are pooled
    assert by_group["a"]["selection_rate"] == 1.0 and by_group["a"]["false_positive_rate"] == 1.0
    assert by_group["b"]["accuracy"] == 1.0 and by_group["b"]["count"] == 500
    rate_b = float(y_true[group == "b"].mean())
    gaps = summary["features"]["group"]
    assert gaps["demographic_parity_difference"] == pytest.approx(1 - min(rate_b, 1 / 3), abs=0.2)
    assert gaps["equalized_odds_difference"] == pytest.approx(1.0)
    assert len(summary["features"]["age"]["groups"]) == 4  # quartiles, not 72 ages
    assert summary["max_equalized_odds_difference"] == pytest.approx(1.0)


def test_explanations_rank_the_feature_that_decides() -> None:
    torch.manual_seed(0)
    frame = pd.DataFrame(
        {
            "decides": np.random.default_rng(0).normal(size=600),
            "noise": np.random.default_rng(1).normal(size=600),
            "colour": np.random.default_rng(2).choice(["red", "blue"], 600),
        }
    )
    prep = Preprocessing(
        kind="table",
        classes=["0", "1"],
        numeric=["decides", "noise"],
        mean=[0.0, 0.0],
        std=[1.0, 1.0],
        categorical={"colour": ["blue", "red"]},
        target="y",
    )
    x = torch.tensor(
        np.c_[frame[["decides", "noise"]], frame["colour"] == "blue", frame["colour"] == "red"],
        dtype=torch.float32,
    )
    y = (x[:, 0] > 0).long()
    model = build_model(BuiltinModel(builtin="mlp", hidden=[16]), input_shape=(4,), classes=2)
    Trainer(TrainConfig(epochs=20, lr=0.1, holdout=0)).fit(model, x, y)
    summary = evaluate_explanations(model, x, y, prep, ExplainConfig(rows=50, repeats=3))
    assert summary["top_features"][0] == "decides"
    assert set(summary["permutation_importance"]) == {"decides", "noise", "colour"}
    assert summary["permutation_importance"]["decides"]["mean"] > 0.3
    assert abs(summary["permutation_importance"]["noise"]["mean"]) < 0.05
    ig = summary["integrated_gradients"]
    assert ig["decides"]["mean_abs"] > 5 * max(ig["noise"]["mean_abs"], ig["colour"]["mean_abs"])
    assert summary["rows_attributed"] == 50


def test_image_explanations_are_average_maps(
    digits_model: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x, y = digits_model
    prep = Preprocessing(kind="images", classes=[str(i) for i in range(10)], image_shape=[8, 8])
    summary = evaluate_explanations(model, x, y, prep, ExplainConfig(rows=40, steps=8))
    assert len(summary["mean_abs_attribution_map"]) == 8
    assert all(len(row) == 8 for row in summary["mean_abs_attribution_map"])
    assert 1 <= len(summary["attribution_maps"]) <= 10
    assert "permutation_importance" not in summary


def test_the_evaluate_block_reads_as_design_writes_it() -> None:
    block = EvaluateConfig.model_validate(
        {
            "robustness": {"attacks": ["fgsm", "pgd"], "eps": [0.01, 0.05]},
            "membership_inference": {"attack": "lira", "shadow_models": 16},
            "fairness": True,
            "explain": False,
        }
    )
    assert block.kinds == ["robustness", "membership", "fairness"]
    with pytest.raises(ValueError, match="asks for nothing"):
        EvaluateConfig.model_validate({"fairness": False})
    with pytest.raises(ValueError, match="listed twice"):
        RobustnessConfig.model_validate({"attacks": ["pgd", "pgd"]})
    with pytest.raises(ValueError, match="Extra inputs"):
        EvaluateConfig.model_validate({"robustnes": {}})


def _square(value: int) -> int:
    return value * value


def _threads_seen(value: int) -> tuple[int, int]:
    return value * value, torch.get_num_threads()


def test_fanout_keeps_order_and_reports_progress() -> None:
    seen: list[tuple[int, int]] = []
    pooled = LocalFanOut(2, worker_start_seconds=0)  # any saving is worth a worker
    got = pooled.map(_square, [3, 1, 2, 5], progress=lambda d, t: seen.append((d, t)))
    assert got == [9, 1, 4, 25] and pooled.last_width == 2
    assert [done for done, _ in seen] == [1, 2, 3, 4] and {t for _, t in seen} == {4}


def test_fanout_keeps_tasks_that_are_quicker_than_a_worker_start_in_the_job() -> None:
    before = torch.get_num_threads()
    local = LocalFanOut(2, worker_start_seconds=60)
    results = local.map(_threads_seen, [1, 2, 3])
    # Run here, in order, on the share of the cores a worker would have had (so the results
    # are the ones workers would give), and the job's own thread count comes back after.
    assert [value for value, _ in results] == [1, 4, 9] and local.last_width == 1
    assert {threads for _, threads in results} == {max(1, (os.cpu_count() or 1) // 2)}
    assert torch.get_num_threads() == before
    assert fanout_from_environment({"BASTION_FANOUT": "local:3"}).width == 3
    assert fanout_from_environment({}).width == 1
    for bad in ("local:x", "cloud:1", "ray:"):
        with pytest.raises(ConfigurationError, match="BASTION_FANOUT"):
            fanout_from_environment({"BASTION_FANOUT": bad})
