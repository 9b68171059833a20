"""Backdoor (trigger) poisoning scan over a trained model's penultimate activations.

Spectral signatures (Tran, Li and Madry, 2018): within one class, the examples a
backdoor relabelled into it share a direction in the model's learned features that the
clean examples do not, so they separate along the top singular vector of the class's
centred activations. Each class's projections are split in two (1-D k-means); the
smaller side is the *suspect cluster*.

Clean classes have natural sub-styles that separate too, so a suspect cluster is only
*confirmed* when most of its members look, in input space, like another class (their
nearest per-class median is not their label): poisoned examples keep the look of their
source class, a sub-style of a class does not. In a confirmed class every member of the
suspect cluster is flagged, and so is every other member that looks like another class.

Limit, measured on the digits with the reference CNN: a 2x2 trigger on 5% of the rows is
found (recall 1.00, false-positive rate 0.0006), on 10% it is not (recall 0): the poison
then outnumbers the target class's clean rows, the smaller side of the split is the clean
one and the class's median is a blur of both. The data-level scan
(:func:`bastion.data.poisoning.label_issues`, its trigger step) finds both rates.

Pure numpy and scikit-learn on arrays; the caller extracts activations with its model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.cluster import KMeans

from bastion.errors import InvalidInput

__all__ = ["BackdoorReport", "ClassFinding", "spectral_scan"]

#: A suspect cluster is confirmed when at least this share of it looks like another class.
CONFIRM = 0.8
#: Classes smaller than this are not scanned (too few examples for a signature).
MIN_CLASS = 20


@dataclass(frozen=True)
class ClassFinding:
    label: int
    size: int
    suspects: int
    look_elsewhere: float  # share of the suspect cluster nearest another class's median
    confirmed: bool


@dataclass
class BackdoorReport:
    flagged: np.ndarray  # row indices
    classes: list[ClassFinding] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        """Counts per class; no row indices (they stay in the compute plane)."""
        return {
            "method": "spectral-signature",
            "flagged": len(self.flagged),
            "poisoned_classes": [c.label for c in self.classes if c.confirmed],
            "classes": [
                {
                    "label": c.label,
                    "size": c.size,
                    "suspects": c.suspects,
                    "look_elsewhere": round(c.look_elsewhere, 4),
                    "confirmed": c.confirmed,
                }
                for c in self.classes
            ],
        }


def _nearest_class(inputs: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Each row's nearest per-class median in input space (medians resist the poison)."""
    medians = np.stack([np.median(inputs[labels == c], axis=0) for c in classes])
    # ||x - m||^2 = ||x||^2 - 2 x.m + ||m||^2, without an (n, k, d) intermediate
    distances = (medians**2).sum(axis=1)[None, :] - 2 * inputs @ medians.T
    return np.asarray(classes[np.argmin(distances, axis=1)])


def _suspect_side(projection: np.ndarray, seed: int) -> np.ndarray:
    clusters = KMeans(2, n_init=10, random_state=seed).fit_predict(projection[:, None])
    smaller = 1 if clusters.mean() < 0.5 else 0
    return np.asarray(clusters == smaller)


def spectral_scan(
    activations: np.ndarray,
    labels: np.ndarray,
    inputs: np.ndarray,
    *,
    confirm: float = CONFIRM,
    seed: int = 0,
) -> BackdoorReport:
    """Flag training rows that carry a backdoor trigger.

    ``activations`` are the penultimate-layer outputs of the trained model for each
    training row (n, d); ``inputs`` the rows themselves, flattened or not (n, ...).
    """
    acts = np.asarray(activations, dtype=float)
    flat = np.asarray(inputs, dtype=float).reshape(len(inputs), -1)
    y = np.asarray(labels)
    if acts.ndim != 2 or len(acts) != len(y) or len(flat) != len(y):
        raise InvalidInput("activations (n, d), labels (n,) and inputs (n, ...) must align")
    if not (np.isfinite(acts).all() and np.isfinite(flat).all()):
        raise InvalidInput("activations and inputs must be finite")
    classes = np.unique(y)
    nearest = _nearest_class(flat, y, classes)
    flagged: list[np.ndarray] = []
    findings: list[ClassFinding] = []
    for label in classes:
        members = np.flatnonzero(y == label)
        if len(members) < MIN_CLASS:
            continue
        centred = acts[members] - acts[members].mean(axis=0)
        _, _, right = np.linalg.svd(centred, full_matrices=False)
        suspect = _suspect_side(centred @ right[0], seed)
        elsewhere = nearest[members] != label
        share = float(elsewhere[suspect].mean()) if suspect.any() else 0.0
        confirmed = share >= confirm
        if confirmed:
            flagged.append(members[suspect | elsewhere])
        findings.append(
            ClassFinding(
                label=int(label),
                size=len(members),
                suspects=int(suspect.sum()),
                look_elsewhere=share,
                confirmed=confirmed,
            )
        )
    rows = np.sort(np.concatenate(flagged)) if flagged else np.array([], dtype=int)
    return BackdoorReport(flagged=rows, classes=findings)
