"""Explanations: global permutation importance and local Integrated Gradients (Captum).

- **Permutation importance** (tables): the drop in held-out accuracy when one feature's
  inputs are shuffled across rows (a categorical feature's one-hot inputs move together),
  averaged over repeats.
- **Integrated Gradients** on a sample of rows or images, towards the predicted class,
  from an all-zero baseline (the training mean of standardised columns; black images).
  Table attributions are summed per feature; image attributions are averaged into one map
  per predicted class.

Only summaries leave the compute plane: per-feature means and spreads, and average maps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from captum.attr import IntegratedGradients

from bastion.evaluate.config import ExplainConfig
from bastion.evaluate.robustness import accuracy
from bastion.train.data import Preprocessing
from bastion.train.device import on_model

__all__ = ["evaluate_explanations", "explain_instances", "feature_groups"]


def feature_groups(prep: Preprocessing) -> dict[str, list[int]]:
    """Which model inputs belong to each table feature (numeric first, then one-hot)."""
    groups = {name: [i] for i, name in enumerate(prep.numeric)}
    start = len(prep.numeric)
    for name, categories in prep.categorical.items():
        groups[name] = list(range(start, start + len(categories)))
        start += len(categories)
    return groups


def _permutation_importance(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    groups: dict[str, list[int]],
    *,
    repeats: int,
    generator: torch.Generator,
) -> dict[str, dict[str, float]]:
    base = accuracy(model, x, y)
    found = {}
    for name, columns in groups.items():
        drops = []
        for _ in range(repeats):
            shuffled = x.clone()
            order = torch.randperm(len(x), generator=generator)
            shuffled[:, columns] = x[order][:, columns]
            drops.append(base - accuracy(model, shuffled, y))
        found[name] = {"mean": float(np.mean(drops)), "std": float(np.std(drops))}
    return found


def evaluate_explanations(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    prep: Preprocessing,
    config: ExplainConfig,
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """Global importance and local attributions, as summaries (no row leaves)."""
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    sample = torch.randperm(len(y), generator=generator)[: config.rows]
    xs = on_model(model, x[sample])  # attributed where the model is
    with torch.no_grad():
        predicted = model(xs).argmax(dim=1)
    attributions = (
        IntegratedGradients(model)
        .attribute(xs, baselines=torch.zeros_like(xs), target=predicted, n_steps=config.steps)
        .detach()
        .cpu()
    )
    predicted = predicted.cpu()
    summary: dict[str, Any] = {"rows_attributed": len(sample), "ig_steps": config.steps}
    if prep.kind == "images":
        maps = {}
        for index, label in enumerate(prep.classes):
            chosen = attributions[predicted == index]
            if len(chosen):
                average = chosen.mean(dim=0).squeeze(0)
                maps[label] = [[round(float(v), 6) for v in row] for row in average]
        summary["attribution_maps"] = maps
        pixels = attributions.abs().mean(dim=0).squeeze(0)
        summary["mean_abs_attribution_map"] = [[round(float(v), 6) for v in r] for r in pixels]
        return summary
    groups = feature_groups(prep)
    per_feature = {
        name: attributions[:, columns].sum(dim=1).numpy() for name, columns in groups.items()
    }
    importance = _permutation_importance(
        model, x, y, groups, repeats=config.repeats, generator=generator
    )
    summary["permutation_importance"] = importance
    summary["integrated_gradients"] = {
        name: {
            "mean_abs": float(np.abs(values).mean()),
            "mean": float(values.mean()),
            "q10": float(np.quantile(values, 0.1)),
            "q90": float(np.quantile(values, 0.9)),
        }
        for name, values in per_feature.items()
    }
    ranked = sorted(importance, key=lambda name: importance[name]["mean"], reverse=True)
    summary["top_features"] = ranked[:10]
    return summary


def explain_instances(
    model: torch.nn.Module, x: torch.Tensor, prep: Preprocessing, *, steps: int = 32
) -> list[dict[str, Any]]:
    """Integrated Gradients for each instance, towards its predicted class (local)."""
    model.eval()
    x = on_model(model, x)  # attributed where the model is
    with torch.no_grad():
        predicted = model(x).argmax(dim=1)
    attributions = (
        IntegratedGradients(model)
        .attribute(x, baselines=torch.zeros_like(x), target=predicted, n_steps=steps)
        .detach()
        .cpu()
    )
    explained: list[dict[str, Any]] = []
    for row, label in zip(attributions, predicted.tolist(), strict=True):
        if prep.kind == "images":
            values: Any = [[round(float(v), 6) for v in r] for r in row.squeeze(0)]
        else:
            values = {
                name: round(float(row[columns].sum()), 6)
                for name, columns in feature_groups(prep).items()
            }
        explained.append({"label": prep.classes[label], "attributions": values})
    return explained
