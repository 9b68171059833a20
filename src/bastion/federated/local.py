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

    from bastion.train.config import PrivacyConfig

__all__ = [
    "Update",
    "evaluate",
    "initial_model",
    "local_update",
    "moments",
    "rows",
    "sample_epsilon",
    "weights",
    "with_weights",
]

#: One site's answer to a training round: its weights, its rows, its last epoch's loss.
Update = tuple[list[np.ndarray], int, float]


def initial_model(plan: FederatedPlan) -> torch.nn.Module:
    """The plan's model with its seeded initial weights (the same in every process)."""
    import torch  # noqa: PLC0415

    from bastion.train.config import BuiltinModel  # noqa: PLC0415
    from bastion.train.models import build_model  # noqa: PLC0415

    torch.manual_seed(plan.seed)
    spec = BuiltinModel.model_validate(plan.model)
    model = build_model(spec, input_shape=plan.input_shape, classes=plan.classes)
    if plan.train.get("privacy"):  # every process holds the DP-compatible form (same weights)
        from bastion.train.dp_sgd import make_private_compatible  # noqa: PLC0415

        model, _ = make_private_compatible(model)
    return model


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


def rows(data: Path, plan: FederatedPlan | None = None) -> dict[str, torch.Tensor]:
    """A site's rows: ``x_train``, ``y_train``, ``x_test``, ``y_test``. ``data`` is a
    safetensors file of those tensors, or the site's table (Parquet), which the plan's
    preprocessing turns into inputs and splits under its seed."""
    if data.suffix == ".safetensors":
        from safetensors.torch import load_file  # noqa: PLC0415

        return load_file(str(data))
    import pandas as pd  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from bastion.errors import InvalidInput  # noqa: PLC0415
    from bastion.train.data import Preprocessing, split_rows  # noqa: PLC0415

    if plan is None or plan.preprocessing is None:
        raise InvalidInput("a site's table needs the plan's preprocessing")
    prep = Preprocessing.model_validate(plan.preprocessing)
    frame = pd.read_parquet(data)
    x = prep.table_features(frame)
    index = {label: i for i, label in enumerate(prep.classes)}
    unknown = sorted({str(v) for v in frame[prep.target]} - set(index))
    if unknown:
        raise InvalidInput(f"labels {', '.join(unknown[:5])} are not among the run's classes")
    y = torch.tensor([index[str(v)] for v in frame[prep.target]], dtype=torch.long)
    _, train, test = split_rows(y, holdout=plan.holdout, seed=plan.seed)
    return {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}


def moments(plan: FederatedPlan, data: Path) -> tuple[list[np.ndarray], int]:
    """The statistics run's answer: the mean and the mean square of each numeric feature
    scaled to its published range (values near [0, 1], within SecAgg+'s clipping range),
    and the number of rows."""
    import pandas as pd  # noqa: PLC0415

    frame = pd.read_parquet(data)
    columns = list(plan.bounds)
    low = np.array([plan.bounds[c][0] for c in columns], dtype=np.float64)
    span = np.array([plan.bounds[c][1] - plan.bounds[c][0] for c in columns], dtype=np.float64)
    scaled = (frame[columns].to_numpy(dtype=np.float64) - low) / np.where(span > 0, span, 1.0)
    return [scaled.mean(axis=0), (scaled**2).mean(axis=0)], len(frame)


class _Proximal:
    """FedProx at the site: after each optimiser step the weights move towards the round's
    global weights by ``lr * mu * (w - w_global)`` (the proximal term's gradient step;
    it reads no data, so DP-SGD's guarantee is untouched)."""

    def __init__(self, mu: float, lr: float, start: torch.nn.Module) -> None:
        self.mu, self.lr = mu, lr
        self.start = [p.detach().clone() for p in start.parameters()]

    def __call__(self, event: object, state: object) -> None:
        import torch  # noqa: PLC0415

        from bastion.train.trainer import Event, TrainState  # noqa: PLC0415

        if event is not Event.BATCH_END or not isinstance(state, TrainState):
            return
        with torch.no_grad():
            for weight, anchor in zip(state.model.parameters(), self.start, strict=True):
                weight.sub_(self.lr * self.mu * (weight - anchor.to(weight.device)))


def _sample_privacy(plan: FederatedPlan, rows: int) -> PrivacyConfig | None:
    """Sample-level DP-SGD at a site (the plan's ``train.privacy``) with the noise multiplier
    that spends the target epsilon over every round's local epochs on this site's ``rows``
    training rows (Poisson sampling at the loader's rate); None without it. Calibrated once
    for the whole run, so each round's pass spends its share."""
    if not plan.train.get("privacy"):
        return None
    from bastion.train.config import TrainConfig  # noqa: PLC0415
    from bastion.train.dp_sgd import calibrated_noise  # noqa: PLC0415

    config = TrainConfig.model_validate(plan.train)
    privacy = config.privacy
    assert privacy is not None
    epochs = config.epochs * plan.rounds
    noise = calibrated_noise(privacy, rows=rows, batch_size=config.batch_size, epochs=epochs)
    return privacy.model_copy(update={"target_epsilon": None, "noise_multiplier": noise})


def _run_epsilon(plan: FederatedPlan, privacy: PrivacyConfig, rows: int) -> float:
    """What the whole run's DP-SGD at ``privacy``'s noise spends on a site's ``rows``."""
    from bastion.train.config import TrainConfig  # noqa: PLC0415

    config = TrainConfig.model_validate(plan.train)
    return sample_epsilon(
        privacy,
        float(privacy.noise_multiplier or 0.0),
        rows=rows,
        batch_size=config.batch_size,
        epochs=config.epochs * plan.rounds,
    )


def sample_epsilon(
    privacy: PrivacyConfig, noise: float, *, rows: int, batch_size: int, epochs: int
) -> float:
    """Epsilon (at ``privacy.delta``, by its accountant) of ``epochs`` epochs of DP-SGD at
    ``noise`` on ``rows`` rows in batches of ``batch_size`` (Poisson sampling)."""
    from opacus.accountants.utils import create_accountant  # noqa: PLC0415

    steps = math.ceil(rows / batch_size)
    accountant = create_accountant(privacy.accountant)
    accountant.history.append((noise, 1 / steps, steps * epochs))
    return float(accountant.get_epsilon(privacy.delta))


def local_update(
    plan: FederatedPlan, arrays: list[np.ndarray], data: Path, *, server_round: int
) -> Update:
    """Train the global weights on the site's rows for the plan's local epochs (seeded by
    the round, so a round is repeatable); with ``train.privacy``, under DP-SGD (Opacus) at
    the noise :func:`_sample_privacy` calibrated for the whole run."""
    from bastion.train.config import TrainConfig  # noqa: PLC0415
    from bastion.train.trainer import Hook, Trainer  # noqa: PLC0415

    site = rows(data, plan)
    model = with_weights(plan, arrays)
    seed = plan.seed + 1000 * server_round
    config = TrainConfig.model_validate({**plan.train, "seed": seed, "holdout": 0.0})
    hooks: list[Hook] = []
    private = _sample_privacy(plan, len(site["y_train"]))
    if private is not None:
        from bastion.train.dp_sgd import PrivacyHook  # noqa: PLC0415

        config = config.model_copy(update={"privacy": private})
        hooks.append(PrivacyHook(private, account=False))  # accounted for the whole run
    if plan.strategy == "fedprox" and plan.proximal_mu > 0:
        hooks.append(_Proximal(plan.proximal_mu, config.lr, model))
    result = Trainer(config, hooks=hooks).fit(model, site["x_train"], site["y_train"])
    loss = float(result.history[-1]["loss"]) if result.history else math.nan
    return weights(result.model), len(site["y_train"]), loss


def evaluate(
    plan: FederatedPlan, arrays: list[np.ndarray], data: Path
) -> tuple[float, int, dict[str, float]]:
    """Loss and rows of the global weights on the site's held-out rows, and its figures
    there: ``accuracy`` and, with sensitive features named, the largest demographic-parity
    and accuracy differences between their groups (fairlearn, as the evaluate stage)."""
    import torch  # noqa: PLC0415

    site = rows(data, plan)
    x, y = site["x_test"], site["y_test"]
    model = with_weights(plan, arrays).eval()
    with torch.no_grad():
        logits = model(x)
        loss = float(torch.nn.functional.cross_entropy(logits, y))
        predicted = logits.argmax(dim=1)
    figures = {"accuracy": float((predicted == y).float().mean())}
    private = _sample_privacy(plan, len(site["y_train"]))
    if private is not None:  # what this site's rows are exposed to by the whole run, at most
        figures["sample_epsilon"] = _run_epsilon(plan, private, len(site["y_train"]))
    if plan.sensitive_features and plan.preprocessing is not None and len(y):
        figures |= _fairness(plan, data, y.numpy(), predicted.numpy())
    return loss, len(y), figures


def _fairness(
    plan: FederatedPlan, data: Path, y_true: np.ndarray, y_pred: np.ndarray
) -> dict[str, float]:
    import pandas as pd  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from bastion.evaluate.config import FairnessConfig  # noqa: PLC0415
    from bastion.evaluate.fairness import evaluate_fairness  # noqa: PLC0415
    from bastion.train.data import Preprocessing, split_rows  # noqa: PLC0415

    prep = Preprocessing.model_validate(plan.preprocessing)
    frame = pd.read_parquet(data)
    index = {label: i for i, label in enumerate(prep.classes)}
    labels = torch.tensor([index[str(v)] for v in frame[prep.target]], dtype=torch.long)
    _, _, test = split_rows(labels, holdout=plan.holdout, seed=plan.seed)
    held_out = frame.iloc[test]
    found = evaluate_fairness(
        y_true,
        y_pred,
        {c: held_out[c] for c in plan.sensitive_features if c in held_out.columns},
        classes=prep.classes,
        config=FairnessConfig(),
    )
    return {
        key: float(found[f"max_{key}"])
        for key in ("demographic_parity_difference", "accuracy_difference")
        if found.get(f"max_{key}") is not None
    }
