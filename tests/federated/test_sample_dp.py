"""Sample-level DP-SGD at a federated site (``train.privacy``), without Flower: a site's local
pass is DP-SGD, calibrated once for the whole run, and the epsilon it reports is the run's."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from opacus.accountants import PRVAccountant, RDPAccountant
from safetensors.torch import save_file

from bastion.federated import local
from bastion.federated.plan import FederatedPlan

ROWS, FEATURES = 200, 6
LOCAL = {"epochs": 2, "batch_size": 25, "lr": 0.2}


@pytest.fixture
def site(tmp_path: Path) -> Path:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(ROWS + 50, FEATURES, generator=generator)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    path = tmp_path / "site.safetensors"
    save_file(
        {"x_train": x[:ROWS], "y_train": y[:ROWS], "x_test": x[ROWS:], "y_test": y[ROWS:]},
        str(path),
    )
    return path


def _plan(tmp_path: Path, train: dict[str, Any], rounds: int = 3) -> FederatedPlan:
    return FederatedPlan(
        model={"builtin": "mlp", "hidden": [16]},
        train=train,
        input_shape=(FEATURES,),
        classes=2,
        sites=3,
        rounds=rounds,
        min_clients=3,
        secure_aggregation=False,
        max_rows=ROWS,
        output=str(tmp_path / "out"),
    )


def _moved(plan: FederatedPlan, site: Path) -> float:
    """How far one local pass moves the global weights (L2 over every parameter)."""
    start = local.weights(local.initial_model(plan))
    arrays, count, _ = local.local_update(plan, start, site, server_round=1)
    assert count == ROWS
    return math.sqrt(sum(float(((a - s) ** 2).sum()) for a, s in zip(arrays, start, strict=True)))


def test_a_sites_pass_is_dp_sgd_its_clipped_gradients_bound_the_step(
    tmp_path: Path, site: Path
) -> None:
    """With a clipping norm of 1e-4 and almost no noise, each of a pass's 16 steps moves the
    weights by at most lr * (momentum's sum) * 1e-4: DP-SGD's clipping is on. The same pass
    without privacy moves them by orders of magnitude more."""
    plain = _moved(_plan(tmp_path, LOCAL), site)
    privacy = {"noise_multiplier": 1e-3, "max_grad_norm": 1e-4, "accountant": "rdp"}
    private = _moved(_plan(tmp_path, {**LOCAL, "privacy": privacy}), site)
    steps = LOCAL["epochs"] * math.ceil(ROWS / LOCAL["batch_size"])
    bound = steps * LOCAL["lr"] * 10 * 1e-4 * 2  # momentum 0.9 sums to at most 10x; noise
    assert plain > 0.1, plain
    assert private < bound, (private, bound)


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_the_reported_epsilon_is_the_whole_runs_at_the_calibrated_noise(
    tmp_path: Path, site: Path, accountant: str
) -> None:
    """The site reports (with its evaluation) the epsilon of every round's epochs on its rows,
    by the configured accountant, computed here from the steps and sample rate: at most the
    target, and close to it (the noise was calibrated for exactly that many steps)."""
    target = 2.0
    privacy = {"target_epsilon": target, "delta": 1e-5, "accountant": accountant}
    plan = _plan(tmp_path, {**LOCAL, "privacy": privacy}, rounds=3)
    start = local.weights(local.initial_model(plan))
    _, _, figures = local.evaluate(plan, start, site)
    reported = figures["sample_epsilon"]
    assert 0.9 * target < reported <= target * 1.001, reported
    # Half the rounds at that noise spend clearly less: the budget is the run's, not a round's.
    noise = local._sample_privacy(plan, ROWS)
    assert noise is not None
    sigma = float(noise.noise_multiplier or 0)
    steps_per_epoch = math.ceil(ROWS / LOCAL["batch_size"])
    check = PRVAccountant() if accountant == "prv" else RDPAccountant()
    check.history.append((sigma, 1 / steps_per_epoch, steps_per_epoch * LOCAL["epochs"] * 3))
    assert check.get_epsilon(1e-5) == pytest.approx(reported, rel=1e-6)
    one_round = local.sample_epsilon(
        noise, sigma, rows=ROWS, batch_size=int(LOCAL["batch_size"]), epochs=int(LOCAL["epochs"])
    )
    assert one_round < 0.75 * reported, (one_round, reported)


def test_without_privacy_a_site_reports_no_sample_epsilon(tmp_path: Path, site: Path) -> None:
    plan = _plan(tmp_path, LOCAL)
    _, _, figures = local.evaluate(plan, local.weights(local.initial_model(plan)), site)
    assert "sample_epsilon" not in figures
    assert np.isfinite(figures["accuracy"])
