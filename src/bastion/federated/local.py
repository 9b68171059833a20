"""A site's side of one round, without Flower: the plan's model, its local training, its
evaluation. :mod:`bastion.federated.apps` calls these in Flower's processes; a test or a
benchmark can compute what a round should give with the same code.

PyTorch and the trainer are imported where a step needs them: Flower starts a process for
every message, and most of SecAgg+'s steps (keys, shares, unmasking) never train.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bastion.federated.plan import FederatedPlan

if TYPE_CHECKING:
    import torch

__all__ = ["Update", "evaluate", "initial_model", "local_update", "weights", "with_weights"]

#: One site's answer to a training round: its weights, its rows, its last epoch's loss.
Update = tuple[list[np.ndarray], int, float]


def initial_model(plan: FederatedPlan) -> torch.nn.Module:
    """The plan's model with its seeded initial weights (the same in every process)."""
    import torch  # noqa: PLC0415

    from bastion.train.config import BuiltinModel  # noqa: PLC0415
    from bastion.train.models import build_model  # noqa: PLC0415

    torch.manual_seed(plan.seed)
    spec = BuiltinModel.model_validate(plan.model)
    return build_model(spec, input_shape=plan.input_shape, classes=plan.classes)


def with_weights(plan: FederatedPlan, arrays: list[np.ndarray]) -> torch.nn.Module:
    """The plan's model holding ``arrays`` (in its ``state_dict`` order)."""
    import torch  # noqa: PLC0415

    model = initial_model(plan)
    names = list(model.state_dict())
    model.load_state_dict(
        {n: torch.from_numpy(np.asarray(w)) for n, w in zip(names, arrays, strict=True)}
    )
    return model


def weights(model: torch.nn.Module) -> list[np.ndarray]:
    """The model's weights as arrays, in its ``state_dict`` order."""
    return [value.detach().cpu().numpy() for value in model.state_dict().values()]


def rows(data: Path) -> dict[str, torch.Tensor]:
    """A site's rows: ``x_train``, ``y_train``, ``x_test``, ``y_test``."""
    from safetensors.torch import load_file  # noqa: PLC0415

    return load_file(str(data))


def local_update(
    plan: FederatedPlan, arrays: list[np.ndarray], data: Path, *, server_round: int
) -> Update:
    """Train the global weights on the site's rows for the plan's local epochs (seeded by
    the round, so a round is repeatable)."""
    from bastion.train.config import TrainConfig  # noqa: PLC0415
    from bastion.train.trainer import Trainer  # noqa: PLC0415

    site = rows(data)
    model = with_weights(plan, arrays)
    seed = plan.seed + 1000 * server_round
    config = TrainConfig.model_validate({**plan.train, "seed": seed, "holdout": 0.0})
    result = Trainer(config).fit(model, site["x_train"], site["y_train"])
    loss = float(result.history[-1]["loss"]) if result.history else math.nan
    return weights(result.model), len(site["y_train"]), loss


def evaluate(plan: FederatedPlan, arrays: list[np.ndarray], data: Path) -> tuple[float, int, float]:
    """Loss, rows and accuracy of the global weights on the site's held-out rows."""
    import torch  # noqa: PLC0415

    site = rows(data)
    x, y = site["x_test"], site["y_test"]
    model = with_weights(plan, arrays).eval()
    with torch.no_grad():
        logits = model(x)
        loss = float(torch.nn.functional.cross_entropy(logits, y))
        accuracy = float((logits.argmax(dim=1) == y).float().mean())
    return loss, len(y), accuracy
