"""Poisoning scans catch injected poisons on the reference data."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pandas as pd
import pytest

from bastion.data.poisoning import conflicting_duplicates, drift, label_issues, outliers
from bastion.data.reference import digits, patients
from bastion.errors import InvalidInput


def _flip(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(labels), size=int(share * len(labels)), replace=False)
    classes = np.unique(labels)
    noisy = labels.copy()
    shift = rng.integers(1, len(classes), len(flipped))
    noisy[flipped] = classes[(np.searchsorted(classes, labels[flipped]) + shift) % len(classes)]
    return noisy, flipped


def _patients() -> tuple[np.ndarray, np.ndarray]:
    frame = patients(seed=0)
    features = frame.select_dtypes("float").to_numpy()
    return features, frame["diagnosis"].to_numpy()


def _digits() -> tuple[np.ndarray, np.ndarray]:
    images, labels = digits(seed=0)
    return images.reshape(len(images), -1).astype(float), labels


@pytest.mark.parametrize("dataset", ["patients", "digits"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_five_percent_label_flips_are_found(dataset: str, seed: int) -> None:
    features, labels = _patients() if dataset == "patients" else _digits()
    noisy, flipped = _flip(labels, 0.05, seed)
    found = label_issues(features, noisy, seed=seed)
    flagged = np.zeros(len(labels), dtype=bool)
    flagged[found.indices] = True
    clean = np.ones(len(labels), dtype=bool)
    clean[flipped] = False
    recall, false_positive_rate = flagged[flipped].mean(), flagged[clean].mean()
    assert recall >= 0.8, f"recall {recall:.3f}"
    assert false_positive_rate < 0.05, f"false-positive rate {false_positive_rate:.3f}"


def test_the_label_scan_starts_no_process_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forking a pool from a process with threads (torch, BLAS) can hang a child."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the label scan started a process pool")

    monkeypatch.setattr(multiprocessing, "Pool", refuse)
    features, labels = _patients()
    noisy, flipped = _flip(labels, 0.05, 0)
    found = label_issues(features, noisy, seed=0)
    assert len(set(found.indices) & set(flipped)) >= 0.8 * len(flipped)


def test_label_scan_refuses_degenerate_input() -> None:
    with pytest.raises(InvalidInput, match="2 classes"):
        label_issues(np.zeros((10, 2)), np.zeros(10))
    with pytest.raises(InvalidInput, match="finite"):
        label_issues(np.full((10, 2), np.nan), np.arange(10) % 2)


def test_injected_outliers_are_isolated() -> None:
    features, _ = _patients()
    rng = np.random.default_rng(0)
    poisoned = features.copy()
    injected = rng.choice(len(features), size=10, replace=False)
    poisoned[injected] = features.mean(axis=0) + 25 * features.std(axis=0)
    found = set(outliers(poisoned, contamination=0.03).tolist())
    assert set(injected.tolist()) <= found


def test_duplicates_with_conflicting_labels() -> None:
    features, labels = _patients()
    copies = np.vstack([features, features[[3, 7]], features[[11]]])
    given = np.concatenate([labels, 1 - labels[[3, 7]], labels[[11]]])
    groups = conflicting_duplicates(copies, given)
    members = sorted(tuple(g.tolist()) for g in groups)
    n = len(features)
    assert members == [(3, n), (7, n + 1)]  # the agreeing duplicate of row 11 is not reported


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
