"""BadNets-style trigger scan on the data itself: a fixed patch (a few features set to
fixed values) stamped on rows that were relabelled to one target class.

Such rows resist the label scan: they share the patch, so their nearest neighbours are
each other and a model learns the patch. Three signs give them away together:

1. *Concentration*: the patch's exact values on a feature are carried by at least
   ``min_rows`` rows, nearly all labelled the target class.
2. *Co-occurrence*: the features of one patch are carried by the same rows; the mask is
   every feature nearly constant on those rows and uncommon elsewhere.
3. *Look elsewhere*: with the mask removed, most carriers look like another class while
   the target class's other rows still look like it. A natural pattern of the class (its
   look, not a patch) fails this test: its rows look like their label with or without it.

Pure numpy and scikit-learn on arrays; labels encoded ``0..k-1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bastion.data.poisoning_evidence import balanced_votes, neighbours

__all__ = ["Trigger", "find_triggers"]

#: Share of a value's carriers that must carry the target label (sign 1).
PURITY = 0.9
#: Share of the carriers a feature must be constant on to join the mask (sign 2), and the
#: largest share of the other rows that may hold the same value.
CONSTANT, ELSEWHERE_COMMON = 0.9, 0.25
#: Sign 3: at least this share of the carriers looks like another class without the mask,
#: and at least three times the share of the target class's other rows that does.
LOOK_ELSEWHERE, CONTRAST = 0.5, 3.0


@dataclass(frozen=True)
class Trigger:
    """A confirmed patch: its target class, the masked features and the rows it marks."""

    label: int  # encoded target class
    features: tuple[int, ...]  # column indices of the mask
    carriers: int  # rows labelled ``label`` that carry the patch
    look_elsewhere: float  # share of the carriers that look like another class unmasked
    rows: np.ndarray  # carriers that look like another class (flagged)
    suspected: np.ndarray  # the class each of ``rows`` looks like without the patch


def _concentrated_values(
    features: np.ndarray, encoded: np.ndarray, n_classes: int, min_rows: int
) -> list[tuple[int, float, int, int]]:
    """(feature, value, class, carriers) where a value is carried by ``min_rows`` or more
    rows, nearly all of one class (sign 1); most carried first."""
    found: list[tuple[int, float, int, int]] = []
    for column in range(features.shape[1]):
        values, inverse, counts = np.unique(
            features[:, column], return_inverse=True, return_counts=True
        )
        for value_index in np.flatnonzero(counts >= min_rows):
            per_class = np.bincount(encoded[inverse == value_index], minlength=n_classes)
            label = int(per_class.argmax())
            if per_class[label] >= PURITY * counts[value_index]:
                found.append((column, float(values[value_index]), label, int(per_class[label])))
    return sorted(found, key=lambda item: -item[3])


def _mask(features: np.ndarray, carrying: np.ndarray) -> tuple[int, ...]:
    """Features nearly constant on the carriers and uncommon on the other rows (sign 2)."""
    mask: list[int] = []
    for column in range(features.shape[1]):
        values, counts = np.unique(features[carrying, column], return_counts=True)
        mode = values[counts.argmax()]
        if counts.max() >= CONSTANT * carrying.sum() and (
            np.mean(features[~carrying, column] == mode) <= ELSEWHERE_COMMON
        ):
            mask.append(column)
    return tuple(mask)


def find_triggers(
    features: np.ndarray,
    space: np.ndarray,
    encoded: np.ndarray,
    *,
    k: int,
    min_rows: int,
) -> list[Trigger]:
    """Confirmed patches in ``features`` (exact values); ``space`` is where rows are
    compared (the same columns, perhaps standardised)."""
    n_classes = int(encoded.max()) + 1
    found: list[Trigger] = []
    examined: set[tuple[int, int]] = set()
    candidates = _concentrated_values(features, encoded, n_classes, min_rows)
    for column, value, label, _ in candidates:
        if (column, label) in examined:
            continue
        seed_rows = (features[:, column] == value) & (encoded == label)
        # Sign 2: the candidates of the same class carried by (nearly) the same rows.
        patch = [
            (other, other_value)
            for other, other_value, other_label, carried in candidates
            if other_label == label
            and ((features[:, other] == other_value) & seed_rows).sum()
            >= 0.8 * min(int(seed_rows.sum()), carried)
        ]
        examined.update((other, label) for other, _ in patch)
        carrying = np.all([features[:, c] == v for c, v in patch], axis=0)
        carriers = np.flatnonzero(carrying & (encoded == label))
        others = np.flatnonzero(~carrying & (encoded == label))
        mask = _mask(features, carrying)
        if len(others) < min_rows or not mask or len(mask) == features.shape[1]:
            continue  # nothing to compare the carriers with, or nothing left to compare on
        # Sign 3: without the mask, do the carriers look like another class?
        unmasked = np.delete(space, list(mask), axis=1)
        query = np.concatenate([carriers, others])
        looks = balanced_votes(neighbours(unmasked, k, query), encoded, n_classes).argmax(axis=1)
        carrier_looks, other_looks = looks[: len(carriers)], looks[len(carriers) :]
        elsewhere = float((carrier_looks != label).mean())
        if elsewhere >= LOOK_ELSEWHERE and elsewhere >= CONTRAST * (other_looks != label).mean():
            moved = carrier_looks != label
            found.append(
                Trigger(
                    label=label,
                    features=mask,
                    carriers=len(carriers),
                    look_elsewhere=elsewhere,
                    rows=carriers[moved],
                    suspected=carrier_looks[moved],
                )
            )
    return found
