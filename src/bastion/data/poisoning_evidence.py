"""Out-of-sample evidence about each row's label: class-balanced neighbour votes and a
cross-validated, strongly regularised linear model. Pure functions on arrays.

Targeted flips (a share of one class relabelled as another) form a coherent cluster that
flexible cross-validated models partly learn, and they inflate the target class. Both
sources of evidence are built so that cannot hide the flipped rows:

* neighbour votes are divided by each class's size (a density ratio, not a majority vote),
  so a flipped 7 labelled 1 still sits where 7s are denser than 1s even when a third of
  the 7s around it carry the label 1;
* the linear model is class-balanced and strongly regularised, too simple to carve the
  flipped cluster out of its source class.

Labels are encoded ``0..k-1`` here; the caller maps them back.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

__all__ = [
    "balanced_votes",
    "combine",
    "feature_space",
    "model_probabilities",
    "neighbour_count",
    "neighbours",
]

#: Inverse regularisation of the linear model: small, so it cannot memorise a flipped cluster.
MODEL_C = 0.05
#: A source's error against the given labels is counted as at least this when weighting.
ERROR_FLOOR = 0.01
#: Neighbours per row: a fifth of the smallest class, within these bounds.
MIN_NEIGHBOURS, MAX_NEIGHBOURS = 5, 50
#: Rows whose neighbours decide between feature spaces (evenly spaced; all when fewer).
SPACE_PROBES = 2000


def neighbour_count(class_sizes: np.ndarray) -> int:
    """k adapted to the classes: large enough to outvote a flipped share of a source class,
    small enough to stay inside the smallest class."""
    return int(np.clip(int(class_sizes.min()) // 5, MIN_NEIGHBOURS, MAX_NEIGHBOURS))


def neighbours(space: np.ndarray, k: int, query: np.ndarray | None = None) -> np.ndarray:
    """The ``k`` nearest rows of each queried row (all rows by default), itself left out.

    An identical twin may come back before the row itself, so the row's own index is
    removed wherever it appears, and the farthest neighbour where it does not.
    """
    rows = np.arange(len(space)) if query is None else np.asarray(query)
    k = min(k, len(space) - 1)
    # Brute force: exact, deterministic, and faster than trees at these k and widths.
    index = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(space)
    found = np.asarray(index.kneighbors(space[rows], return_distance=False))
    own = found == rows[:, None]
    own[~own.any(axis=1), -1] = True
    return np.asarray(found[~own].reshape(len(rows), k))


def balanced_votes(near: np.ndarray, encoded: np.ndarray, n_classes: int) -> np.ndarray:
    """Each row's neighbour votes per class divided by that class's size, normalised to 1."""
    sizes = np.bincount(encoded, minlength=n_classes).astype(float)
    votes = np.stack([(encoded[near] == c).sum(axis=1) for c in range(n_classes)], axis=1)
    density = votes / np.maximum(sizes, 1.0)
    return np.asarray(density / density.sum(axis=1, keepdims=True))


def feature_space(features: np.ndarray, encoded: np.ndarray, *, k: int) -> np.ndarray:
    """The rows as given or standardised, whichever neighbour votes agree with more.

    Pixels share one scale and standardising them inflates the rarely inked border;
    tabular columns do not (areas in the thousands beside ratios below one). Agreement
    with the given labels picks between the two even when some labels are wrong; it is
    measured on at most :data:`SPACE_PROBES` rows, which is plenty to tell the two apart.
    """
    n_classes = int(encoded.max()) + 1
    probes = np.unique(np.linspace(0, len(features) - 1, SPACE_PROBES).astype(int))
    best, best_agreement = features, -1.0
    for space in (features, StandardScaler().fit_transform(features)):
        votes = balanced_votes(neighbours(space, k, probes), encoded, n_classes)
        agreement = float((votes.argmax(axis=1) == encoded[probes]).mean())
        if agreement > best_agreement:
            best, best_agreement = space, agreement
    return np.asarray(best)


def model_probabilities(
    features: np.ndarray, encoded: np.ndarray, *, folds: int, seed: int
) -> np.ndarray:
    """Out-of-fold class probabilities of a class-balanced, strongly regularised linear model."""
    model = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=MODEL_C, class_weight="balanced", max_iter=2000),
    )
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return np.asarray(
        cross_val_predict(model, features, encoded, cv=splitter, method="predict_proba")
    )


def combine(sources: list[np.ndarray], encoded: np.ndarray) -> np.ndarray:
    """Average class probabilities, each source weighted by the inverse of how often its
    best guess contradicts the given labels: a linear model on classes made of several
    clusters, or neighbours in a space that blurs them, count for less."""
    errors = [max(float((p.argmax(axis=1) != encoded).mean()), ERROR_FLOOR) for p in sources]
    weights = np.array([1.0 / e for e in errors])
    return np.asarray(sum(w * p for w, p in zip(weights, sources, strict=True)) / weights.sum())
