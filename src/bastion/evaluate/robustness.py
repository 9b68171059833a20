"""Adversarial robustness: clean and robust accuracy for each attack and eps (a curve).

The attacks are :mod:`bastion.evaluate.attacks` (the code adversarial training uses),
run on held-out rows in chunks, inside the inputs' valid range. The summary holds only
aggregate numbers, so it may leave the compute plane.

Each point's ``robust_accuracy`` is measured in float space (any value in the range).
When the dataset's values are integers (images of integer pixels: the inference server
refuses anything else) each point also holds ``robust_accuracy_integer``, the same
attack with every iterate projected onto the integers within eps; that is the figure the
``min_robust_accuracy`` gate and the scorecard read
(:func:`bastion.evaluate.scorecard.served_robust_accuracy`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bastion.evaluate.attacks import Bound, Lattice, Norm, fgsm, pgd
from bastion.evaluate.config import RobustnessConfig
from bastion.train.device import on_model

__all__ = ["CHUNK_ROWS", "accuracy", "evaluate_robustness"]

#: Rows attacked at once: large enough to vectorise, small enough to bound memory.
CHUNK_ROWS = 4096


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of rows whose predicted class is the label (computed where the model is); for a
    language model, of the tokens predicted (padding, -100, left out)."""
    counted = len(y) if y.dim() == 1 else int((y != -100).sum())
    if counted == 0:
        return float("nan")
    with torch.no_grad():
        right = sum(
            int(
                (
                    model(on_model(model, x[i : i + CHUNK_ROWS])).argmax(dim=1)
                    == on_model(model, y[i : i + CHUNK_ROWS])
                ).sum()
            )
            for i in range(0, len(y), CHUNK_ROWS)
        )
    return right / counted


def _attacked(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    attack: str,
    eps: float,
    config: RobustnessConfig,
    lower: Bound,
    upper: Bound,
    lattice: Lattice | None,
    generator: torch.Generator,
) -> torch.Tensor:
    adversarial = []
    for start in range(0, len(y), CHUNK_ROWS):
        xs, ys = x[start : start + CHUNK_ROWS], y[start : start + CHUNK_ROWS]
        if attack == "fgsm":
            adversarial.append(
                fgsm(model, xs, ys, eps=eps, lower=lower, upper=upper, lattice=lattice)
            )
        else:
            adversarial.append(
                pgd(
                    model,
                    xs,
                    ys,
                    eps=eps,
                    steps=config.steps,
                    step_size=config.step_size,
                    norm=Norm(config.norm),
                    restarts=config.restarts,
                    schedule=config.schedule,
                    early_stop=True,
                    lower=lower,
                    upper=upper,
                    lattice=lattice,
                    generator=generator,
                )
            )
    return torch.cat(adversarial)


def evaluate_robustness(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    config: RobustnessConfig,
    *,
    lower: Bound,
    upper: Bound,
    lattice: Lattice | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Clean accuracy and, per attack and eps, robust accuracy on (at most max_rows) rows.

    With a ``lattice`` (the dataset's integer values) each point also holds
    ``robust_accuracy_integer``, measured on examples the server would accept; the summary's
    ``gated_space`` then says ``integer``: the ``min_robust_accuracy`` gate reads that
    figure, since float-space examples cannot reach the deployed model.
    """
    generator = torch.Generator().manual_seed(seed)
    if len(y) > config.max_rows:
        keep = torch.randperm(len(y), generator=generator)[: config.max_rows]
        x, y = x[keep], y[keep]
    # The attack runs where the model is (a GPU when the job was given one).
    x, y = on_model(model, x), on_model(model, y)
    lower = on_model(model, lower) if isinstance(lower, torch.Tensor) else lower
    upper = on_model(model, upper) if isinstance(upper, torch.Tensor) else upper
    model.eval()
    norm = Norm(config.norm)
    spaces: dict[str, Lattice | None] = {"robust_accuracy": None}
    if lattice is not None:
        spaces["robust_accuracy_integer"] = lattice
    curve = []
    for attack in config.attacks:
        if attack == "fgsm" and norm is not Norm.LINF:
            continue  # FGSM is an L-infinity attack; the L2 curve is PGD's alone
        for eps in config.eps:
            point: dict[str, Any] = {"attack": attack, "eps": eps}
            for key, space in spaces.items():
                attacked = _attacked(
                    model,
                    x,
                    y,
                    attack=attack,
                    eps=eps,
                    config=config,
                    lower=lower,
                    upper=upper,
                    lattice=space,
                    generator=generator,
                )
                point[key] = accuracy(model, attacked, y)
            curve.append(point)
    return {
        "rows": len(y),
        "clean_accuracy": accuracy(model, x, y),
        "norm": config.norm,
        "steps": config.steps,
        "restarts": config.restarts,
        "schedule": config.schedule,
        "gated_space": "float" if lattice is None else "integer",
        "curve": curve,
    }
