"""Attacks in the space the inference server accepts: integer pixels within the schema's
range, and the integer-space robust accuracy the card shows and the gate reads."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from bastion.evaluate.attacks import Lattice, Norm, fgsm, image_lattice, pgd
from bastion.evaluate.card import build_card, card_plots, render_html
from bastion.evaluate.config import RobustnessConfig
from bastion.evaluate.robustness import evaluate_robustness
from bastion.evaluate.scorecard import build_scorecard
from bastion.governance.policy import evaluate_gates, parse_policy
from bastion.train.config import TrainConfig
from bastion.train.models import BuiltinModel, build_model
from bastion.train.trainer import Trainer

#: The digits schema: uint8 pixels 0..16, scaled by the model's preprocessing to 0..1.
DIGITS = image_lattice(dtype="uint8", minimum=0, maximum=16, value_range=(0.0, 16.0))


@pytest.fixture(scope="module")
def trained(digits_tensors: tuple[torch.Tensor, torch.Tensor]) -> torch.nn.Module:
    x, y = digits_tensors
    torch.manual_seed(0)
    model = build_model(BuiltinModel(builtin="cnn"), input_shape=(1, 8, 8), classes=10)
    Trainer(TrainConfig(epochs=4, lr=0.05)).fit(model, x, y)
    return model.eval()


def _pixels(x: torch.Tensor) -> torch.Tensor:
    return x * 16


def test_a_lattice_only_for_integer_pixels_in_the_schemas_range() -> None:
    assert Lattice(step=1 / 16, lower=0.0, upper=1.0) == DIGITS
    assert image_lattice(dtype="float32", minimum=0, maximum=1, value_range=(0, 1)) is None
    # A schema narrower than the preprocessing's range bounds the lattice to it.
    narrow = image_lattice(dtype="int16", minimum=2, maximum=10, value_range=(0.0, 16.0))
    assert narrow == Lattice(step=1 / 16, lower=2 / 16, upper=10 / 16)
    assert DIGITS is not None and DIGITS.budget(0.2) == 3 / 16 and DIGITS.budget(0.05) == 0


def test_integer_attacks_give_integer_pixels_within_eps_and_range(
    trained: torch.nn.Module, digits_tensors: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = digits_tensors[0][:200], digits_tensors[1][:200]
    generator = torch.Generator().manual_seed(0)
    for eps in (0.1, 0.2, 0.3):
        for adversarial in (
            pgd(trained, x, y, eps=eps, steps=10, lattice=DIGITS, generator=generator),
            pgd(trained, x, y, eps=eps, steps=10, lattice=DIGITS, early_stop=True),
            fgsm(trained, x, y, eps=eps, lattice=DIGITS),
        ):
            pixels = _pixels(adversarial)
            assert torch.equal(pixels, torch.round(pixels))
            assert float(pixels.min()) >= 0 and float(pixels.max()) <= 16
            assert float((pixels - _pixels(x)).abs().max()) <= eps * 16
            assert float((pixels - _pixels(x)).abs().max()) > 0  # it did move
    l2 = pgd(trained, x, y, eps=1.0, steps=10, norm=Norm.L2, lattice=DIGITS)
    assert torch.equal(_pixels(l2), torch.round(_pixels(l2)))
    assert float((l2 - x).flatten(1).norm(dim=1).max()) <= 1.0 + 1e-5
    # Under one pixel level of budget no valid input differs: the attack cannot move.
    assert torch.equal(pgd(trained, x, y, eps=0.05, steps=5, lattice=DIGITS), x)


def test_robustness_reports_both_spaces_and_integers_cannot_do_better_at_a_fraction(
    trained: torch.nn.Module, digits_tensors: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = digits_tensors[0][:300], digits_tensors[1][:300]
    config = RobustnessConfig(eps=[0.05, 0.1], steps=10, max_rows=300)
    summary = evaluate_robustness(trained, x, y, config, lower=0.0, upper=1.0, lattice=DIGITS)
    assert summary["gated_space"] == "integer"
    points = {(p["attack"], p["eps"]): p for p in summary["curve"]}
    # eps 0.05 is under one level: integer inputs cannot change, float ones can.
    assert points[("pgd", 0.05)]["robust_accuracy_integer"] == summary["clean_accuracy"]
    assert points[("pgd", 0.05)]["robust_accuracy"] < summary["clean_accuracy"]
    # eps 0.1 is 1.6 levels: one level on integers, so fewer examples succeed.
    assert points[("pgd", 0.1)]["robust_accuracy_integer"] > points[("pgd", 0.1)]["robust_accuracy"]
    floats = evaluate_robustness(trained, x, y, config, lower=0.0, upper=1.0)
    assert floats["gated_space"] == "float"
    assert all("robust_accuracy_integer" not in p for p in floats["curve"])


def _card(robustness: dict[str, object]) -> dict[str, object]:
    return build_card(
        name="m",
        version={"version": 1, "stage": "none", "evidence": {}},
        evaluations={"robustness": robustness},
        dataset_summaries=None,
    )


INTEGER: dict[str, Any] = {
    "rows": 100,
    "clean_accuracy": 0.95,
    "norm": "linf",
    "steps": 10,
    "restarts": 1,
    "gated_space": "integer",
    "curve": [
        {"attack": "pgd", "eps": 0.1, "robust_accuracy": 0.3, "robust_accuracy_integer": 0.8},
        {"attack": "pgd", "eps": 0.2, "robust_accuracy": 0.0, "robust_accuracy_integer": 0.02},
    ],
}


def test_the_gate_and_scorecard_read_the_integer_figure_and_the_card_shows_both() -> None:
    card = _card(INTEGER)
    policy = parse_policy({"min_robust_accuracy": {"eps": 0.1, "value": 0.5}})
    (gate,) = evaluate_gates(policy, card)
    assert gate.passed and gate.actual == "0.8" and gate.required.endswith("on integer inputs")
    float_only = {
        **INTEGER,
        "gated_space": "float",
        "curve": [{"attack": "pgd", "eps": 0.1, "robust_accuracy": 0.3}],
    }
    (gate,) = evaluate_gates(policy, _card(float_only))
    assert not gate.passed and gate.actual == "0.3"
    ml01 = build_scorecard(card)[0]
    assert ml01["id"] == "ML01" and "robust accuracy 0.800" in ml01["evidence"]
    page = render_html(card)
    assert "Robust accuracy (integer inputs)" in page and "Robust accuracy (float inputs)" in page
    assert card_plots(card)["robustness"].count("<polyline") == 3  # float, integer, clean


def test_a_curve_merged_with_an_older_float_only_evaluation_falls_back_to_float() -> None:
    older = {"attack": "pgd", "eps": 0.05, "robust_accuracy": 0.6}  # before integer figures
    card = _card({**INTEGER, "curve": [older, *INTEGER["curve"]]})
    policy = parse_policy({"min_robust_accuracy": {"eps": 0.05, "value": 0.5}})
    (gate,) = evaluate_gates(policy, card)
    assert gate.passed and gate.actual == "0.6"
    assert "not measured" in render_html(card)
    assert card_plots(card)["robustness"].count("<polyline") == 3
