"""Poisoning and quality scans over a labelled table: label issues (flipped labels,
conflicting duplicates, BadNets-style triggers), outliers, and drift against the previous
version. Pure functions on arrays and frames.

The label scan averages two sources of out-of-sample evidence
(:mod:`bastion.data.poisoning_evidence`): class-balanced neighbour votes in the feature
space the labels agree with most, and a cross-validated, class-balanced, strongly
regularised linear model. A row is flagged when that evidence favours another class
(the *suspected* class); identical rows with different labels are settled by their
shared evidence, and rows carrying a trigger patch (:mod:`bastion.data.poisoning_trigger`)
by how they look without it. Findings name rows and stay in the compute plane; their
:meth:`~bastion.data.poisoning_report.LabelIssues.summary` counts class pairs only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.ensemble import IsolationForest

from bastion.data.poisoning_evidence import (
    balanced_votes,
    combine,
    feature_space,
    model_probabilities,
    neighbour_count,
    neighbours,
)
from bastion.data.poisoning_report import (
    Finding,
    LabelIssues,
    LabelScanSummary,
    PairCount,
    Reason,
)
from bastion.data.poisoning_trigger import Trigger, find_triggers
from bastion.errors import InvalidInput

__all__ = [
    "ColumnDrift",
    "Finding",
    "LabelIssues",
    "LabelScanSummary",
    "PairCount",
    "Reason",
    "Trigger",
    "conflicting_duplicates",
    "drift",
    "label_issues",
    "outliers",
]

#: A row is flagged when the evidence for its suspected class beats that for its label by
#: more than this (a near tie is ambiguity at a class border, not a wrong label).
MARGIN = 0.05
#: A trigger must be carried by at least this many rows, and this share of the scan.
TRIGGER_MIN_ROWS, TRIGGER_MIN_SHARE = 10, 0.005


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
    seed: int = 0,
) -> LabelIssues:
    """Rows whose label the data disagrees with, the class each looks like, and why.

    Deterministic for a given ``seed`` (it only splits the folds).
    """
    x, y = _features(features), np.asarray(labels)
    if y.ndim != 1 or len(y) != len(x):
        raise InvalidInput("labels must be one per row of features")
    classes, encoded, counts = np.unique(y, return_inverse=True, return_counts=True)
    if len(classes) < 2 or counts.min() < folds:
        raise InvalidInput(
            f"label scans need at least 2 classes with {folds} rows each; "
            "scan more rows or merge the rarest classes"
        )
    encoded = encoded.reshape(-1)
    k = neighbour_count(counts)
    rows = np.arange(len(x))
    # (1) Out-of-sample evidence per row and class, combined; the best other class is the
    # suspect, flagged when it wins by more than the margin.
    space = feature_space(x, encoded, k=k)
    votes = balanced_votes(neighbours(space, k), encoded, len(classes))
    model = model_probabilities(x, encoded, folds=folds, seed=seed)
    evidence = combine([votes, model], encoded)
    support = evidence[rows, encoded]
    others = evidence.copy()
    others[rows, encoded] = -np.inf
    suspected = others.argmax(axis=1)
    reasons = np.full(len(x), None, dtype=object)
    reasons[others[rows, suspected] - support > MARGIN] = Reason.LABEL
    # (2) Identical rows with different labels: their shared evidence decides; the members
    # it contradicts are flagged, the others cleared.
    groups = conflicting_duplicates(x, y)
    for group in groups:
        consensus = int(evidence[group].sum(axis=0).argmax())
        suspected[group] = consensus
        reasons[group] = None
        reasons[group[encoded[group] != consensus]] = Reason.CONFLICTING_DUPLICATE
    # (3) Trigger patches: carriers are judged by how they look without the patch.
    min_rows = max(TRIGGER_MIN_ROWS, int(TRIGGER_MIN_SHARE * len(x)))
    triggers = find_triggers(x, space, encoded, k=k, min_rows=min_rows)
    for trigger in triggers:
        suspected[trigger.rows] = trigger.suspected
        reasons[trigger.rows] = Reason.TRIGGER
    flagged = np.flatnonzero([reason is not None for reason in reasons])
    return LabelIssues(
        indices=flagged,
        given=y[flagged],
        suspected=classes[suspected[flagged]],
        reasons=reasons[flagged],
        quality=support,
        triggers=tuple(triggers),
        conflicting_duplicate_groups=len(groups),
    )


def outliers(features: np.ndarray, *, contamination: float = 0.02, seed: int = 0) -> np.ndarray:
    """Row indices an isolation forest isolates unusually fast."""
    x = _features(features)
    forest = IsolationForest(contamination=contamination, random_state=seed)
    return np.flatnonzero(forest.fit_predict(x) == -1)


def conflicting_duplicates(
    features: np.ndarray, labels: np.ndarray, *, decimals: int = 6
) -> list[np.ndarray]:
    """Groups of identical (or identical after rounding) rows that carry different labels.

    Rows are compared exactly (sorted, not hashed), so every such group is found and no
    two different rows are ever put together.
    """
    x = np.round(_features(features), decimals) + 0.0  # -0.0 and 0.0 are one value
    y = np.asarray(labels)
    if len(y) != len(x):
        raise InvalidInput("labels must be one per row of features")
    if len(x) == 0:
        return []
    _, inverse = np.unique(x, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    boundaries = np.flatnonzero(np.diff(inverse[order])) + 1
    return [
        np.sort(members)
        for members in np.split(order, boundaries)
        if len(members) > 1 and len(np.unique(y[members])) > 1
    ]


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
