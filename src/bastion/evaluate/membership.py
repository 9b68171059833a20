"""Membership inference: does the model give away which rows it was trained on?

Two attacks, scored on a balanced set of members (training rows) and non-members
(held-out rows):

- **loss threshold** (Yeom et al.): members have lower loss;
- **LiRA** (Carlini et al., "Membership Inference Attacks From First Principles"): N shadow
  models are trained under the target's own recipe (DP included) on random halves of all
  the rows (training and held out), so every scored row has shadow models that saw it
  ("in") and that did not ("out").
  A row's logit-scaled confidence under the target is compared with Gaussians fitted to its
  in and out confidences, with one variance shared by all rows (the fixed-variance
  variant): the **online** attack uses both, the **offline** one only the out models.

The summary holds AUC, TPR at 0.1% and 1% FPR and a log-spaced ROC curve: aggregates only.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

from bastion.evaluate.attacks import input_bounds
from bastion.evaluate.config import MembershipConfig
from bastion.evaluate.fanout import FanOut, InOrder
from bastion.train.config import BuiltinModel, EntrypointModel, TrainConfig
from bastion.train.device import model_device, on_model
from bastion.train.models import build_model
from bastion.train.recipe import recipe
from bastion.train.trainer import Trainer

__all__ = [
    "ShadowTask",
    "attack_summary",
    "confidence_scores",
    "evaluate_membership",
    "lira_scores",
    "loss_scores",
    "train_shadow",
]

#: FPR values the stored ROC curve keeps (log-spaced: the low-FPR end is what matters).
ROC_POINTS = np.logspace(-4, 0, 41)


def confidence_scores(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """LiRA's statistic: log(p_y / (1 - p_y)), computed stably from the logits."""
    model.eval()
    y = on_model(model, y)
    with torch.no_grad():
        logits = model(on_model(model, x)).double()
        correct = logits.gather(1, y[:, None]).squeeze(1)
        others = logits.scatter(1, y[:, None], -float("inf")).logsumexp(dim=1)
    scores: np.ndarray = (correct - others).cpu().numpy()
    return scores


def loss_scores(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Negative cross-entropy per row (higher: more likely a member)."""
    model.eval()
    with torch.no_grad():
        logits = model(on_model(model, x)).double()
        loss = torch.nn.functional.cross_entropy(logits, on_model(model, y), reduction="none")
    scores: np.ndarray = (-loss).cpu().numpy()
    return scores


@dataclass(frozen=True)
class ShadowTask:
    """One shadow model: the target's recipe, trained on the rows ``mask`` selects of the
    whole population ``x``, scored on the rows ``scored`` indexes, on ``device`` (the
    target's: ``cuda`` when the job was given a GPU)."""

    model: dict[str, Any]
    train: dict[str, Any]
    input_shape: tuple[int, ...]
    classes: int
    x: np.ndarray
    y: np.ndarray
    mask: np.ndarray
    scored: np.ndarray
    seed: int
    device: str = "cpu"


def train_shadow(task: ShadowTask) -> np.ndarray:
    """Train one shadow model and return its confidence on the scored rows."""
    config = TrainConfig.model_validate({**task.train, "seed": task.seed})
    spec = (
        EntrypointModel.model_validate(task.model)
        if "entrypoint" in task.model
        else BuiltinModel.model_validate(task.model)
    )
    x, y = torch.from_numpy(task.x), torch.from_numpy(task.y)
    torch.manual_seed(config.seed)
    model = build_model(spec, input_shape=task.input_shape, classes=task.classes)
    lower, upper = input_bounds(x, images=x.dim() > 2)
    model, hooks, _ = recipe(model, config, lower=lower, upper=upper, account=False)
    keep = torch.from_numpy(task.mask)
    result = Trainer(config, hooks, device=task.device).fit(model, x[keep], y[keep])
    scored = torch.from_numpy(task.scored)
    return confidence_scores(result.model, x[scored], y[scored])


def lira_scores(
    target: np.ndarray, shadow: np.ndarray, masks: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Online and offline LiRA scores with a fixed (global) variance.

    ``shadow[s, i]`` is shadow model s's confidence on row i and ``masks[s, i]`` whether
    row i was in its training set. A row without any in (or out) model falls back to
    the mean over all rows.
    """
    inside = np.where(masks, shadow, np.nan)
    outside = np.where(masks, np.nan, shadow)
    mean_in, mean_out = np.nanmean(inside), np.nanmean(outside)
    with warnings.catch_warnings():  # an all-NaN column warns; it is replaced below
        warnings.simplefilter("ignore", RuntimeWarning)
        mu_in = np.nanmean(inside, axis=0)
        mu_out = np.nanmean(outside, axis=0)
    mu_in = np.where(np.isnan(mu_in), mean_in, mu_in)
    mu_out = np.where(np.isnan(mu_out), mean_out, mu_out)
    sd_in = max(float(np.nanstd(inside - mu_in)), 1e-6)
    sd_out = max(float(np.nanstd(outside - mu_out)), 1e-6)
    online = stats.norm.logpdf(target, mu_in, sd_in) - stats.norm.logpdf(target, mu_out, sd_out)
    offline = -stats.norm.logsf(target, mu_out, sd_out)  # how far above the out models
    return np.asarray(online), np.asarray(offline)


def attack_summary(scores: np.ndarray, members: np.ndarray) -> dict[str, Any]:
    """AUC, TPR at 0.1% and 1% FPR, and the ROC at log-spaced FPRs."""
    fpr, tpr, _ = roc_curve(members, scores)

    def tpr_at(limit: float) -> float:
        return float(tpr[fpr <= limit].max()) if (fpr <= limit).any() else 0.0

    curve = np.interp(ROC_POINTS, fpr, tpr)
    return {
        "auc": float(roc_auc_score(members, scores)),
        "tpr_at_0.1%_fpr": tpr_at(0.001),
        "tpr_at_1%_fpr": tpr_at(0.01),
        "roc": [[float(f), float(t)] for f, t in zip(ROC_POINTS, curve, strict=True)],
    }


def _scored_rows(
    train_rows: int, test_rows: int, limit: int, generator: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Indices into train and held-out rows: as many members as non-members, at most limit."""
    each = min(train_rows, test_rows, limit // 2)
    return (
        np.sort(generator.choice(train_rows, size=each, replace=False)),
        np.sort(generator.choice(test_rows, size=each, replace=False)),
    )


def evaluate_membership(
    model: torch.nn.Module,
    *,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    config: MembershipConfig,
    model_spec: dict[str, Any],
    train_config: dict[str, Any],
    classes: int,
    fanout: FanOut | None = None,
    epsilon: float | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Attack ``model`` (trained on ``train``) with the held-out ``test`` rows as non-members."""
    generator = np.random.default_rng(seed)
    pick_in, pick_out = _scored_rows(len(train[1]), len(test[1]), config.max_rows, generator)
    x = torch.cat([train[0][pick_in], test[0][pick_out]])
    y = torch.cat([train[1][pick_in], test[1][pick_out]])
    members = np.concatenate([np.ones(len(pick_in), bool), np.zeros(len(pick_out), bool)])
    summary: dict[str, Any] = {
        "attack": config.attack,
        "rows": len(members),
        "members": int(members.sum()),
        "epsilon": epsilon,
        "loss": attack_summary(loss_scores(model, x, y), members),
    }
    if config.attack == "lira":
        # Shadows train on random halves of every row (training and held out), as close to
        # the target's training-set size as the data allows; each scored row is in half.
        population_x = torch.cat([train[0], test[0]]).numpy()
        population_y = torch.cat([train[1], test[1]]).numpy()
        scored = np.concatenate([pick_in, len(train[1]) + pick_out])
        population_masks = _half_masks(config.shadow_models, len(population_y), generator)
        shadow_config = _shadow_recipe(train_config, rows=int(population_masks[0].sum()))
        tasks = [
            ShadowTask(
                model=model_spec,
                train=shadow_config,
                input_shape=tuple(x.shape[1:]),
                classes=classes,
                x=population_x,
                y=population_y,
                mask=mask,
                scored=scored,
                seed=int(train_config.get("seed", 0)) + 1 + s,
                device=str(model_device(model)),
            )
            for s, mask in enumerate(population_masks)
        ]
        runner = fanout or InOrder()
        shadow = np.stack(runner.map(train_shadow, tasks, progress=progress))
        masks = population_masks[:, scored]
        online, offline = lira_scores(confidence_scores(model, x, y), shadow, masks)
        summary["shadow_models"] = config.shadow_models
        if shadow_config.get("privacy"):
            summary["shadow_noise_multiplier"] = shadow_config["privacy"].get("noise_multiplier")
        summary["fanout_width"] = runner.last_width
        summary["lira_online"] = attack_summary(online, members)
        summary["lira_offline"] = attack_summary(offline, members)
    headline = summary["lira_online"] if config.attack == "lira" else summary["loss"]
    summary["auc"] = headline["auc"]
    summary["tpr_at_0.1%_fpr"] = headline["tpr_at_0.1%_fpr"]
    summary["tpr_at_1%_fpr"] = headline["tpr_at_1%_fpr"]
    return summary


def _shadow_recipe(train_config: dict[str, Any], *, rows: int) -> dict[str, Any]:
    """The target's recipe for shadow models of ``rows`` rows.

    A DP target's noise, calibrated to its epsilon, is calibrated once here for the
    shadows' size (they all share it) instead of once in every shadow.
    """
    config = TrainConfig.model_validate(train_config)
    if config.privacy is None or config.privacy.target_epsilon is None:
        return train_config
    from bastion.train.dp_sgd import calibrated_noise  # noqa: PLC0415 - Opacus on demand

    noise = calibrated_noise(
        config.privacy, rows=rows, batch_size=config.batch_size, epochs=config.epochs
    )
    privacy = {**train_config["privacy"], "target_epsilon": None, "noise_multiplier": noise}
    return {**train_config, "privacy": privacy}


def _half_masks(count: int, rows: int, generator: np.random.Generator) -> np.ndarray:
    """Each row is in exactly half of the shadow models' training sets (Carlini et al.)."""
    order = np.argsort(generator.random((count, rows)), axis=0)
    masks: np.ndarray = order < count // 2
    return masks
