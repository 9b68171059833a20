"""Poisoning scan: Bastion's label scan versus textbook confident learning, on the same rows.

The measured set, each attack at each flip rate over several seeds:

* targeted flips: a share of ONE source class relabelled as ONE target class (digits 7->1
  and 3->8, patients malignant->benign; wine 1->0, iris 1->2 and a synthetic 4-class set
  are held out, the scan was not tuned on them);
* random flips: 5% of all rows moved to another class at random (digits, patients);
* BadNets: the bottom-right 2x2 pixels of 5% / 10% of the digits set to full ink, those
  rows relabelled 0;
* conflicting duplicates: copies of 2% of the digits carrying another label.

Bastion: :func:`bastion.data.poisoning.label_issues`. Baseline: cleanlab's
``find_label_issues`` over out-of-fold probabilities of one (standardised)
LogisticRegression, the textbook recipe. Recall is the share of poisoned rows flagged; the
false-positive rate (FPR) the share of clean rows flagged. Each side flags what it decides
to flag, so each is compared at the FPR it achieves; the "same-count" columns also give
cleanlab as many flags as Bastion raised (its worst label-quality scores), which puts it at
about Bastion's FPR.

    python benchmarks/bench_poisoning.py [--seeds 3] [--rates 0.1 0.3] [--attacks ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.datasets import load_iris, load_wine, make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bastion.data.poisoning import conflicting_duplicates, label_issues
from bastion.data.reference import digits, patients

Data = tuple[np.ndarray, np.ndarray]
#: (features, labels, rate, seed) -> (features, noisy labels, poisoned rows)
Poison = Callable[[np.ndarray, np.ndarray, float, int], tuple[np.ndarray, np.ndarray, np.ndarray]]


def _digits() -> Data:
    images, labels = digits(seed=0)
    return images.reshape(len(images), -1).astype(float), labels


def _patients() -> Data:
    frame = patients(seed=0)
    return frame.select_dtypes("float").to_numpy(), frame["diagnosis"].to_numpy()


def _wine() -> Data:
    bundle = load_wine()
    return np.asarray(bundle.data, dtype=float), np.asarray(bundle.target)


def _iris() -> Data:
    bundle = load_iris()
    return np.asarray(bundle.data, dtype=float), np.asarray(bundle.target)


def _blobs() -> Data:
    x, y = make_classification(
        n_samples=1000,
        n_features=16,
        n_informative=6,
        n_redundant=2,
        n_classes=4,
        n_clusters_per_class=1,
        class_sep=1.5,
        flip_y=0,
        random_state=23,
    )
    return np.asarray(x, dtype=float), np.asarray(y)


def _targeted(source: int, target: int) -> Poison:
    def poison(
        x: np.ndarray, y: np.ndarray, rate: float, seed: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        members = np.flatnonzero(y == source)
        chosen = np.random.default_rng(seed).choice(
            members, size=round(rate * len(members)), replace=False
        )
        noisy = y.copy()
        noisy[chosen] = target
        return x, noisy, chosen

    return poison


def _random(
    x: np.ndarray, y: np.ndarray, rate: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(y), size=int(rate * len(y)), replace=False)
    classes = np.unique(y)
    noisy = y.copy()
    shift = rng.integers(1, len(classes), len(flipped))
    noisy[flipped] = classes[(np.searchsorted(classes, y[flipped]) + shift) % len(classes)]
    return x, noisy, flipped


def _badnets(
    x: np.ndarray, y: np.ndarray, rate: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    chosen = rng.choice(np.flatnonzero(y != 0), size=int(rate * len(y)), replace=False)
    images = x.reshape(len(x), 8, 8).copy()
    images[chosen, 6:8, 6:8] = 16.0
    noisy = y.copy()
    noisy[chosen] = 0
    return images.reshape(len(x), -1), noisy, chosen


def _duplicates(
    x: np.ndarray, y: np.ndarray, rate: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    originals = rng.choice(len(y), size=int(rate * len(y)), replace=False)
    classes = np.unique(y)
    shift = rng.integers(1, len(classes), len(originals))
    relabelled = classes[(np.searchsorted(classes, y[originals]) + shift) % len(classes)]
    copies = np.arange(len(y), len(y) + len(originals))
    return np.vstack([x, x[originals]]), np.concatenate([y, relabelled]), copies


@dataclass(frozen=True)
class Attack:
    key: str
    name: str
    data: Callable[[], Data]
    poison: Poison
    rates: tuple[float, ...] | None  # None: the --rates given


ATTACKS = [
    Attack("digits-7-1", "digits 7->1", _digits, _targeted(7, 1), None),
    Attack("digits-3-8", "digits 3->8", _digits, _targeted(3, 8), None),
    Attack("patients-1-0", "patients 1->0", _patients, _targeted(1, 0), None),
    Attack("wine-1-0", "wine 1->0 (held out)", _wine, _targeted(1, 0), None),
    Attack("iris-1-2", "iris 1->2 (held out)", _iris, _targeted(1, 2), None),
    Attack("blobs-0-3", "blobs 0->3 (held out, overlap)", _blobs, _targeted(0, 3), None),
    Attack("random-digits", "digits random", _digits, _random, (0.05,)),
    Attack("random-patients", "patients random", _patients, _random, (0.05,)),
    Attack("badnets", "digits BadNets 2x2 ->0", _digits, _badnets, (0.05, 0.1)),
    Attack("duplicates", "digits conflicting dups", _digits, _duplicates, (0.02,)),
]


def _baseline(x: np.ndarray, y: np.ndarray, seed: int, budget: int) -> tuple[np.ndarray, ...]:
    """Textbook confident learning: cleanlab over one logistic regression's OOF probabilities.

    Returns the rows cleanlab flags, and the ``budget`` rows its label-quality score ranks
    worst (cleanlab given as many flags as Bastion raised, so at about Bastion's FPR).
    """
    _, encoded = np.unique(y, return_inverse=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    splitter = StratifiedKFold(5, shuffle=True, random_state=seed)
    probabilities = cross_val_predict(model, x, encoded, cv=splitter, method="predict_proba")
    flagged = find_label_issues(encoded, probabilities, n_jobs=1)
    worst = np.argsort(get_label_quality_scores(encoded, probabilities), kind="stable")[:budget]
    return np.flatnonzero(flagged), worst


def _rates(flagged: np.ndarray, poisoned: np.ndarray, rows: int) -> tuple[float, float]:
    hit = np.zeros(rows, dtype=bool)
    hit[flagged] = True
    clean = np.ones(rows, dtype=bool)
    clean[poisoned] = False
    return float(hit[poisoned].mean()), float(hit[clean].mean())


@dataclass
class Row:
    name: str
    rate: float
    ours: list[tuple[float, float]]
    theirs: list[tuple[float, float]]
    matched: list[tuple[float, float]]
    seconds: list[float]
    duplicate_groups_exact: bool | None = None


def _measure(attack: Attack, rate: float, seeds: int) -> Row:
    x, y = attack.data()
    row = Row(attack.name, rate, [], [], [], [])
    for seed in range(seeds):
        features, noisy, poisoned = attack.poison(x, y, rate, seed)
        started = time.perf_counter()
        found = label_issues(features, noisy, seed=seed)
        row.seconds.append(time.perf_counter() - started)
        row.ours.append(_rates(found.indices, poisoned, len(noisy)))
        theirs, worst = _baseline(features, noisy, seed, found.count)
        row.theirs.append(_rates(theirs, poisoned, len(noisy)))
        row.matched.append(_rates(worst, poisoned, len(noisy)))
        if attack.poison is _duplicates:
            groups = {tuple(g.tolist()) for g in conflicting_duplicates(features, noisy)}
            originals = features[poisoned]
            expected = {
                (int(np.flatnonzero((x == original).all(axis=1))[0]), int(copy))
                for original, copy in zip(originals, poisoned, strict=True)
            }
            exact = groups == expected
            row.duplicate_groups_exact = exact and (row.duplicate_groups_exact in (None, True))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rates", type=float, nargs="+", default=[0.1, 0.3])
    parser.add_argument(
        "--attacks", nargs="+", default=[a.key for a in ATTACKS], choices=[a.key for a in ATTACKS]
    )
    args = parser.parse_args()

    rows = [
        _measure(attack, rate, args.seeds)
        for attack in ATTACKS
        if attack.key in args.attacks
        for rate in (attack.rates or tuple(args.rates))
    ]
    print(f"Poisoning scan, means over {args.seeds} seed(s); rate = share of the source class")
    print("(targeted), of all rows (random, BadNets) or copies added (duplicates)")
    print()
    print(
        f"{'attack':<32} {'rate':>5} {'Bastion R':>10} {'FPR':>6} {'min R':>6} {'max FPR':>8}"
        f" {'cleanlab R':>11} {'FPR':>6} {'same-count R':>13} {'FPR':>6} {'Bastion s':>10}"
    )
    for row in rows:
        ours_r = [r for r, _ in row.ours]
        ours_f = [f for _, f in row.ours]
        print(
            f"{row.name:<32} {row.rate:>5.0%} {statistics.mean(ours_r):>10.3f}"
            f" {statistics.mean(ours_f):>6.3f} {min(ours_r):>6.3f} {max(ours_f):>8.3f}"
            f" {statistics.mean(r for r, _ in row.theirs):>11.3f}"
            f" {statistics.mean(f for _, f in row.theirs):>6.3f}"
            f" {statistics.mean(r for r, _ in row.matched):>13.3f}"
            f" {statistics.mean(f for _, f in row.matched):>6.3f}"
            f" {statistics.median(row.seconds):>10.2f}"
        )
    exact = [row.duplicate_groups_exact for row in rows if row.duplicate_groups_exact is not None]
    if exact:
        print(f"\nconflicting duplicate groups found exactly: {'yes' if all(exact) else 'NO'}")
    ours_recall = statistics.mean(r for row in rows for r, _ in row.ours)
    theirs_recall = statistics.mean(r for row in rows for r, _ in row.theirs)
    ours_fpr = statistics.mean(f for row in rows for _, f in row.ours)
    theirs_fpr = statistics.mean(f for row in rows for _, f in row.theirs)
    matched_recall = statistics.mean(r for row in rows for r, _ in row.matched)
    print(
        f"cleanlab's score given as many flags as Bastion: mean recall {matched_recall:.3f} "
        f"(Bastion/cleanlab {ours_recall / matched_recall:.2f}x at the same count)"
    )
    print()
    print(
        f"ratio Bastion/baseline mean recall: {ours_recall / theirs_recall:.2f}x "
        f"({ours_recall:.3f} vs {theirs_recall:.3f}, at mean FPR {ours_fpr:.3f} vs "
        f"{theirs_fpr:.3f})"
    )


if __name__ == "__main__":
    main()
