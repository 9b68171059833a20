"""Poisoning and quality scans over a labelled table: label issues, outliers, conflicting
duplicates, and drift against the previous version. Pure functions on arrays and frames.

Label issues use cleanlab on out-of-sample probabilities from a small cross-validated
ensemble (logistic regression and k-nearest neighbours); a row is flagged when cleanlab's
noise-rate pruning selects it or its label-quality score is below ``quality_threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from scipy import stats
from sklearn.ensemble import IsolationForest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bastion.errors import InvalidInput

__all__ = [
    "ColumnDrift",
    "LabelIssues",
    "conflicting_duplicates",
    "drift",
    "label_issues",
    "outliers",
]


@dataclass
class LabelIssues:
    """Rows whose given label the data disagrees with (indices, never values)."""

    indices: np.ndarray
    quality: np.ndarray = field(repr=False)

    @property
    def count(self) -> int:
        return len(self.indices)


def _features(features: np.ndarray) -> np.ndarray:
    array = np.asarray(features, dtype=float)
    if array.ndim != 2 or not np.isfinite(array).all():
        raise InvalidInput("features must be a finite 2-D numeric array")
    return array


def label_issues(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    folds: int = 5,
    quality_threshold: float = 0.4,
    seed: int = 0,
) -> LabelIssues:
    x, y = _features(features), np.asarray(labels)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2 or counts.min() < folds:
        raise InvalidInput(f"label scans need at least 2 classes with {folds} rows each")
    # cleanlab wants labels 0..k-1.
    encoded = np.searchsorted(classes, y)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    models = (
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5)),
        make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=15)),
    )
    probabilities = np.mean(
        [cross_val_predict(m, x, encoded, cv=splitter, method="predict_proba") for m in models],
        axis=0,
    )
    # n_jobs=1: cleanlab would fork a process pool from a process that already runs threads
    # (torch, BLAS, an HTTP client), and a forked child can hang on a lock one of them held;
    # per-class pruning of a scan's sample is quick in one process.
    flagged = find_label_issues(encoded, probabilities, filter_by="prune_by_noise_rate", n_jobs=1)
    quality = get_label_quality_scores(encoded, probabilities)
    flagged |= quality < quality_threshold
    return LabelIssues(indices=np.flatnonzero(flagged), quality=quality)


def outliers(features: np.ndarray, *, contamination: float = 0.02, seed: int = 0) -> np.ndarray:
    """Row indices an isolation forest isolates unusually fast."""
    x = _features(features)
    forest = IsolationForest(contamination=contamination, random_state=seed)
    return np.flatnonzero(forest.fit_predict(x) == -1)


def conflicting_duplicates(
    features: np.ndarray, labels: np.ndarray, *, decimals: int = 6
) -> list[np.ndarray]:
    """Groups of identical (or identical after rounding) rows that carry different labels."""
    x = np.round(_features(features), decimals)
    frame = pd.DataFrame(x)
    keys = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    groups: list[np.ndarray] = []
    y = np.asarray(labels)
    order = np.argsort(keys, kind="stable")
    boundaries = np.flatnonzero(np.diff(keys[order])) + 1
    for members in np.split(order, boundaries):
        if len(members) > 1 and len(np.unique(y[members])) > 1:
            groups.append(np.sort(members))
    return groups


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    test: str  # "ks" or "chi2"
    statistic: float
    p_value: float
    psi: float

    @property
    def drifted(self) -> bool:
        return self.p_value < 0.01 or self.psi > 0.2


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    expected = np.clip(expected / expected.sum(), 1e-6, None)
    actual = np.clip(actual / actual.sum(), 1e-6, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def drift(previous: pd.DataFrame, current: pd.DataFrame, *, bins: int = 10) -> list[ColumnDrift]:
    """Per shared column: KS (numeric) or chi-square (categorical), and the PSI."""
    results: list[ColumnDrift] = []
    for column in [c for c in previous.columns if c in current.columns]:
        old, new = previous[column].dropna(), current[column].dropna()
        if len(old) == 0 or len(new) == 0:
            continue
        if pd.api.types.is_numeric_dtype(old) and pd.api.types.is_numeric_dtype(new):
            ks = stats.ks_2samp(old, new)
            edges = np.unique(np.quantile(old, np.linspace(0, 1, bins + 1)))
            edges[0], edges[-1] = -np.inf, np.inf
            psi = _psi(np.histogram(old, edges)[0] + 0.0, np.histogram(new, edges)[0] + 0.0)
            results.append(
                ColumnDrift(str(column), "ks", float(ks.statistic), float(ks.pvalue), psi)
            )
        else:
            categories = sorted(set(old.astype(str)) | set(new.astype(str)))
            table = np.array(
                [
                    old.astype(str).value_counts().reindex(categories, fill_value=0).to_numpy(),
                    new.astype(str).value_counts().reindex(categories, fill_value=0).to_numpy(),
                ]
            )
            if table.shape[1] < 2:
                continue
            chi2 = stats.chi2_contingency(table + 0.5)
            psi = _psi(table[0] + 0.0, table[1] + 0.0)
            results.append(
                ColumnDrift(str(column), "chi2", float(chi2.statistic), float(chi2.pvalue), psi)
            )
    return results
