"""Fairness per sensitive feature, with fairlearn's MetricFrame, on held-out rows.

For each sensitive feature: accuracy and row count per group and, for a two-class target
(positive class: the second of the sorted classes), selection rate, TPR and FPR per group
with the demographic-parity and equalized-odds differences. Numeric features with many
values are cut into quartiles, and groups smaller than ``min_group_size`` are pooled, so
no group in the summary describes a handful of people.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from fairlearn.metrics import (
    MetricFrame,
    count,
    demographic_parity_difference,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import accuracy_score

from bastion.evaluate.config import FairnessConfig

__all__ = ["POOLED", "evaluate_fairness", "groups_of"]

POOLED = "(small groups)"
_MAX_VALUES = 10


def groups_of(values: pd.Series, min_group_size: int) -> np.ndarray:
    """Group labels for a sensitive column: quartiles for many-valued numbers, small pooled."""
    if pd.api.types.is_numeric_dtype(values) and values.nunique() > _MAX_VALUES:
        labels = pd.qcut(values, q=4, duplicates="drop").astype(str)
    else:
        labels = values.astype(str)
    sizes = labels.map(labels.value_counts())
    pooled: np.ndarray = labels.where(sizes >= min_group_size, POOLED).to_numpy()
    return pooled


def _number(value: Any) -> float | None:
    number = float(value)
    return None if np.isnan(number) else number


def evaluate_fairness(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    sensitive: dict[str, pd.Series],
    *,
    classes: list[str],
    config: FairnessConfig,
) -> dict[str, Any]:
    """Per-group metrics and the gaps between groups, for each sensitive feature."""
    binary = len(classes) == 2
    metrics: dict[str, Any] = {"accuracy": accuracy_score, "count": count}
    if binary:
        metrics |= {
            "selection_rate": selection_rate,
            "true_positive_rate": true_positive_rate,
            "false_positive_rate": false_positive_rate,
        }
    features: dict[str, Any] = {}
    for name, values in sensitive.items():
        groups = groups_of(values.reset_index(drop=True), config.min_group_size)
        frame = MetricFrame(
            metrics=metrics, y_true=y_true, y_pred=y_pred, sensitive_features=groups
        )
        table = frame.by_group
        rows = [
            {"group": str(group), **{k: _number(v) for k, v in table.loc[group].items()}}
            for group in table.index
        ]
        summary: dict[str, Any] = {
            "groups": rows,
            "accuracy_difference": _number(frame.difference()["accuracy"]),
        }
        if binary:
            summary["demographic_parity_difference"] = float(
                demographic_parity_difference(y_true, y_pred, sensitive_features=groups)
            )
            summary["equalized_odds_difference"] = float(
                equalized_odds_difference(y_true, y_pred, sensitive_features=groups)
            )
        features[name] = summary

    def worst(key: str) -> float | None:
        found = [f[key] for f in features.values() if f.get(key) is not None]
        return max(found) if found else None

    return {
        "rows": len(y_true),
        "positive_class": classes[1] if binary else None,
        "features": features,
        "max_demographic_parity_difference": worst("demographic_parity_difference"),
        "max_equalized_odds_difference": worst("equalized_odds_difference"),
        "max_accuracy_difference": worst("accuracy_difference"),
    }
