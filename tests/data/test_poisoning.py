"""Poisoning scans catch injected poisons on the reference data: random and targeted label
flips, BadNets-style trigger patches and conflicting duplicates, each at no more than 5%
false positives; the summary that leaves the compute plane counts class pairs only."""

from __future__ import annotations

import json
import multiprocessing
import os
from functools import cache

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_wine

from bastion.data.poisoning import (
    LabelIssues,
    Reason,
    conflicting_duplicates,
    drift,
    label_issues,
    outliers,
)
from bastion.data.reference import digits, patients
from bastion.errors import InvalidInput

#: The slow test repeats the measured set over this many more seeds.
SCALE = int(os.environ.get("BASTION_SLOW_SCALE", "1"))

#: (dataset, source class, target class): a share of the source relabelled as the target.
#: Wine is held out: the scan was never tuned on it.
TARGETED = [("digits", 7, 1), ("digits", 3, 8), ("patients", 1, 0), ("wine", 1, 0)]


@cache
def _data(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "digits":
        images, labels = digits(seed=0)
        return images.reshape(len(images), -1).astype(float), labels
    if name == "patients":
        frame = patients(seed=0)
        return frame.select_dtypes("float").to_numpy(), frame["diagnosis"].to_numpy()
    bundle = load_wine()
    return np.asarray(bundle.data, dtype=float), np.asarray(bundle.target)


def _flip(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random flips: ``share`` of all rows moved to another class, chosen at random."""
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(labels), size=int(share * len(labels)), replace=False)
    classes = np.unique(labels)
    noisy = labels.copy()
    shift = rng.integers(1, len(classes), len(flipped))
    noisy[flipped] = classes[(np.searchsorted(classes, labels[flipped]) + shift) % len(classes)]
    return noisy, flipped


def _target(
    labels: np.ndarray, source: object, target: object, share: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Targeted flips: ``share`` of the source class relabelled as the target class."""
    members = np.flatnonzero(labels == source)
    chosen = np.random.default_rng(seed).choice(
        members, size=round(share * len(members)), replace=False
    )
    noisy = labels.copy()
    noisy[chosen] = target
    return noisy, chosen


def _badnets(share: float, seed: int, target: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Digits with the bottom-right 2x2 pixels set to full ink on ``share`` of the rows,
    which are relabelled ``target``."""
    images, labels = digits(seed=0)
    x = images.astype(float)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(np.flatnonzero(labels != target), size=int(share * len(x)), replace=False)
    x[chosen, 6:8, 6:8] = 16.0
    y = labels.copy()
    y[chosen] = target
    return x.reshape(len(x), -1), y, chosen


def _rates(found: LabelIssues, poisoned: np.ndarray, rows: int) -> tuple[float, float]:
    """Recall of the poisoned rows, and the share of clean rows flagged."""
    flagged = np.zeros(rows, dtype=bool)
    flagged[found.indices] = True
    clean = np.ones(rows, dtype=bool)
    clean[poisoned] = False
    return float(flagged[poisoned].mean()), float(flagged[clean].mean())


@cache
def _seven_to_one() -> tuple[np.ndarray, np.ndarray, LabelIssues]:
    features, labels = _data("digits")
    noisy, flipped = _target(labels, 7, 1, 0.3, seed=0)
    return noisy, flipped, label_issues(features, noisy, seed=0)


def _check_targeted(dataset: str, source: int, target: int, share: float, seed: int) -> None:
    features, labels = _data(dataset)
    noisy, flipped = _target(labels, source, target, share, seed)
    found = label_issues(features, noisy, seed=seed)
    recall, false_positive_rate = _rates(found, flipped, len(labels))
    where = f"{dataset} {source}->{target} {share:.0%} seed {seed}"
    assert recall >= 0.8, f"{where}: recall {recall:.3f}"
    assert false_positive_rate <= 0.05, f"{where}: false-positive rate {false_positive_rate:.3f}"
    # The flipped rows are reported as the class they came from.
    top = found.pair_counts()[0]
    assert (top.given, top.suspected) == (target, source), where
    assert top.count >= 0.75 * len(flipped), where


@pytest.mark.parametrize("share", [0.1, 0.3])
@pytest.mark.parametrize(("dataset", "source", "target"), TARGETED)
def test_targeted_label_flips_are_found(
    dataset: str, source: int, target: int, share: float
) -> None:
    # Measured over seeds 0-2 (benchmarks/bench_poisoning.py): recall 0.81-1.00 (wine 30%
    # the lowest), false-positive rate at most 0.045.
    _check_targeted(dataset, source, target, share, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize(("dataset", "source", "target"), TARGETED)
def test_targeted_label_flips_are_found_across_seeds(
    dataset: str, source: int, target: int
) -> None:
    for seed in range(1, 1 + 2 * SCALE):
        for share in (0.1, 0.3):
            _check_targeted(dataset, source, target, share, seed)


@pytest.mark.parametrize("dataset", ["patients", "digits"])
def test_random_label_flips_are_found(dataset: str) -> None:
    """5% of all rows flipped at random, pooled over three seeds."""
    features, labels = _data(dataset)
    found_total = clean_flagged = flipped_total = clean_total = 0
    for seed in (0, 1, 2):
        noisy, flipped = _flip(labels, 0.05, seed)
        recall, false_positive_rate = _rates(
            label_issues(features, noisy, seed=seed), flipped, len(labels)
        )
        found_total += round(recall * len(flipped))
        flipped_total += len(flipped)
        clean_flagged += round(false_positive_rate * (len(labels) - len(flipped)))
        clean_total += len(labels) - len(flipped)
    # Measured: patients 0.976 (the two misses sit on the class border), digits 0.996.
    assert found_total / flipped_total >= 0.95, found_total / flipped_total
    assert clean_flagged / clean_total <= 0.05, clean_flagged / clean_total


@pytest.mark.parametrize("share", [0.05, 0.1])
def test_a_badnets_trigger_patch_is_found(share: float) -> None:
    features, labels, poisoned = _badnets(share, seed=0)
    found = label_issues(features, labels, seed=0)
    recall, false_positive_rate = _rates(found, poisoned, len(labels))
    assert recall >= 0.95, recall  # measured 1.00 at 5% and 10%, seeds 0-2
    assert false_positive_rate <= 0.05, false_positive_rate
    [trigger] = found.triggers
    assert trigger.label == 0
    assert {55, 63} <= set(trigger.features)  # the patch's pixels (row-major 8x8)
    reasons = dict(zip(found.indices.tolist(), found.reasons.tolist(), strict=True))
    assert all(reasons[row] is Reason.TRIGGER for row in poisoned)
    assert found.summary().triggers == 1


@pytest.mark.parametrize("dataset", ["digits", "patients"])
def test_clean_data_has_no_trigger(dataset: str) -> None:
    features, labels = _data(dataset)
    found = label_issues(features, labels, seed=0)
    assert found.triggers == ()
    assert found.count <= 0.05 * len(labels)  # clean rows at a class border only


def test_conflicting_duplicates_are_found_exactly_and_the_copies_flagged() -> None:
    features, labels = _data("digits")
    originals = np.arange(0, 400, 20)
    relabelled = (labels[originals] + 1 + originals % 9) % 10  # never the original label
    copies = np.vstack([features, features[originals], features[[5]]])
    given = np.concatenate([labels, relabelled, labels[[5]]])
    n = len(features)
    groups = conflicting_duplicates(copies, given)
    expected = sorted((int(o), n + i) for i, o in enumerate(originals))
    # Exactly the injected pairs; the agreeing copy of row 5 is not a conflict.
    assert sorted(tuple(g.tolist()) for g in groups) == expected
    found = label_issues(copies, given, seed=0)
    reasons = dict(zip(found.indices.tolist(), found.reasons.tolist(), strict=True))
    injected = range(n, n + len(originals))
    assert all(reasons.get(row) is Reason.CONFLICTING_DUPLICATE for row in injected)
    assert not set(originals.tolist()) & set(reasons)  # the original keeps its label
    assert found.conflicting_duplicate_groups == len(originals)


def test_findings_name_rows_and_the_summary_only_counts_pairs() -> None:
    noisy, flipped, found = _seven_to_one()
    findings = found.findings()
    assert [f.row for f in findings] == found.indices.tolist()
    by_row = {f.row: f for f in findings}
    assert all(by_row[row].given == 1 and by_row[row].suspected == 7 for row in flipped)
    summary = found.summary().model_dump(mode="json")
    assert set(summary) == {
        "rows_scanned",
        "count",
        "rate",
        "pairs",
        "triggers",
        "conflicting_duplicate_groups",
    }
    assert summary["rows_scanned"] == len(noisy)
    assert sum(p["count"] for p in summary["pairs"]) == summary["count"] == found.count
    assert all(set(p) == {"given", "suspected", "count", "reasons"} for p in summary["pairs"])
    assert summary["pairs"][0]["given"] == 1 and summary["pairs"][0]["suspected"] == 7
    assert summary["pairs"][0]["reasons"] == {"label": summary["pairs"][0]["count"]}
    json.dumps(summary)  # JSON-able as it is


def test_the_scan_is_deterministic_for_a_seed() -> None:
    noisy, _, found = _seven_to_one()
    features, _ = _data("digits")
    again = label_issues(features, noisy, seed=0)
    assert np.array_equal(again.indices, found.indices)
    assert np.array_equal(again.suspected, found.suspected)


def test_string_labels_come_back_as_given() -> None:
    features, labels = _data("patients")
    names = np.array(["benign", "malignant"])[labels]
    noisy, flipped = _target(names, "malignant", "benign", 0.3, seed=0)
    found = label_issues(features, noisy, seed=0)
    pair = found.pair_counts()[0]
    assert (pair.given, pair.suspected) == ("benign", "malignant")
    assert pair.count >= 0.8 * len(flipped)


def test_the_label_scan_starts_no_process_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forking a pool from a process with threads (torch, BLAS) can hang a child."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the label scan started a process pool")

    monkeypatch.setattr(multiprocessing, "Pool", refuse)
    features, labels = _data("patients")
    noisy, flipped = _flip(labels, 0.05, 0)
    found = label_issues(features, noisy, seed=0)
    assert len(set(found.indices) & set(flipped)) >= 0.8 * len(flipped)


def test_label_scan_refuses_degenerate_input() -> None:
    with pytest.raises(InvalidInput, match="2 classes"):
        label_issues(np.zeros((10, 2)), np.zeros(10))
    with pytest.raises(InvalidInput, match="finite"):
        label_issues(np.full((10, 2), np.nan), np.arange(10) % 2)
    with pytest.raises(InvalidInput, match="one per row"):
        label_issues(np.zeros((10, 2)), np.arange(9) % 2)
    with pytest.raises(InvalidInput, match="one per row"):
        conflicting_duplicates(np.zeros((10, 2)), np.arange(9))


def test_injected_outliers_are_isolated() -> None:
    features, _ = _data("patients")
    rng = np.random.default_rng(0)
    poisoned = features.copy()
    injected = rng.choice(len(features), size=10, replace=False)
    poisoned[injected] = features.mean(axis=0) + 25 * features.std(axis=0)
    found = set(outliers(poisoned, contamination=0.03).tolist())
    assert set(injected.tolist()) <= found


def test_duplicates_with_conflicting_labels() -> None:
    features, labels = _data("patients")
    copies = np.vstack([features, features[[3, 7]], features[[11]]])
    given = np.concatenate([labels, 1 - labels[[3, 7]], labels[[11]]])
    groups = conflicting_duplicates(copies, given)
    members = sorted(tuple(g.tolist()) for g in groups)
    n = len(features)
    assert members == [(3, n), (7, n + 1)]  # the agreeing duplicate of row 11 is not reported
    # Rows that differ in one value below the rounding are one row; -0.0 is 0.0.
    near = np.array([[0.0, 1.0], [-0.0, 1.0 + 1e-9], [0.0, 1.1]])
    assert [g.tolist() for g in conflicting_duplicates(near, np.array([0, 1, 1]))] == [[0, 1]]


def test_drift_flags_shifted_columns_only() -> None:
    frame = patients(seed=0)[["mean_radius", "mean_texture", "sex"]]
    shifted = frame.copy()
    shifted["mean_radius"] = shifted["mean_radius"] * 1.5
    shifted["sex"] = np.where(np.arange(len(shifted)) % 2 == 0, "M", shifted["sex"])
    report = {d.column: d for d in drift(frame, shifted)}
    assert report["mean_radius"].drifted and report["mean_radius"].test == "ks"
    assert report["sex"].drifted and report["sex"].test == "chi2"
    assert not report["mean_texture"].drifted
    same = drift(frame, frame.sample(frac=1.0, random_state=1))
    assert not any(d.drifted for d in same)
    assert isinstance(pd.DataFrame([d.__dict__ for d in same]), pd.DataFrame)
