"""Out-of-distribution and adversarial input detection, fitted on the training data.

- Mahalanobis distance (Lee et al., 2018): class-conditional means and one shared,
  shrunk covariance, of the model's inputs and of its penultimate features; the score
  is the distance to the nearest class. Perturbations that move an input across a
  decision boundary in feature space still leave it far from every class in input
  space, where training data spans few directions.
- Feature squeezing (Xu et al., 2018), for images: the largest L1 change of the output
  probabilities when the input's bit depth is reduced or it is median-filtered.

Each score's threshold is the ``1 - fpr / k`` quantile of its value on held-out clean
rows (``k`` scores), so at most about ``fpr`` of clean requests are flagged in all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from sklearn.covariance import LedoitWolf

from bastion.inference.config import OodAction

__all__ = ["Detection", "InputDetector", "MahalanobisScore", "OodAction", "SqueezeScore"]

Probabilities = Callable[[torch.Tensor], torch.Tensor]
Features = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class MahalanobisScore:
    means: np.ndarray  # (classes, d)
    precision: np.ndarray  # (d, d)

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray) -> MahalanobisScore:
        classes = np.unique(labels)
        means = np.stack([features[labels == c].mean(axis=0) for c in classes])
        centred = features - means[np.searchsorted(classes, labels)]
        return cls(means=means, precision=LedoitWolf().fit(centred).precision_)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        diff = features[:, None, :] - self.means[None, :, :]
        distances = np.einsum("ncd,de,nce->nc", diff, self.precision, diff)
        return np.asarray(distances.min(axis=1))


def _median_filter(x: torch.Tensor, size: int = 2) -> torch.Tensor:
    padded = F.pad(x, (0, size - 1, 0, size - 1), mode="replicate")
    patches = padded.unfold(2, size, 1).unfold(3, size, 1)
    return patches.reshape(*patches.shape[:4], -1).median(dim=-1).values


@dataclass(frozen=True)
class SqueezeScore:
    bits: int = 3

    def __call__(self, probabilities: Probabilities, x: torch.Tensor) -> np.ndarray:
        levels = 2**self.bits - 1
        with torch.inference_mode():
            base = probabilities(x)
            squeezed = [
                probabilities(torch.round(x.clamp(0, 1) * levels) / levels),
                probabilities(_median_filter(x)),
            ]
            change = torch.stack([(s - base).abs().sum(dim=1) for s in squeezed]).amax(dim=0)
        return np.asarray(change.numpy())


@dataclass(frozen=True)
class Detection:
    flagged: np.ndarray  # bool per instance
    scores: dict[str, np.ndarray]


class InputDetector:
    """Mahalanobis in input and feature space (all models) plus feature squeezing (images)."""

    def __init__(
        self,
        *,
        inputs: MahalanobisScore,
        penultimate: MahalanobisScore,
        thresholds: dict[str, float],
        squeeze: SqueezeScore | None,
    ) -> None:
        self.inputs = inputs
        self.penultimate = penultimate
        self.thresholds = thresholds
        self.squeeze = squeeze

    @classmethod
    def fit(
        cls,
        *,
        features: Features,
        probabilities: Probabilities,
        x_fit: torch.Tensor,
        y_fit: torch.Tensor,
        x_calibrate: torch.Tensor,
        images: bool,
        fpr: float = 0.03,
    ) -> InputDetector:
        """Fit on training rows; set thresholds on held-out clean rows."""
        labels = y_fit.numpy()
        detector = cls(
            inputs=MahalanobisScore.fit(x_fit.flatten(1).numpy(), labels),
            penultimate=MahalanobisScore.fit(features(x_fit).numpy(), labels),
            thresholds={},
            squeeze=SqueezeScore() if images else None,
        )
        scores = detector.scores(features, probabilities, x_calibrate)
        detector.thresholds = {
            name: float(np.quantile(values, 1 - fpr / len(scores)))
            for name, values in scores.items()
        }
        return detector

    def scores(
        self, features: Features, probabilities: Probabilities, x: torch.Tensor
    ) -> dict[str, np.ndarray]:
        found = {
            "input_mahalanobis": self.inputs(x.flatten(1).numpy()),
            "feature_mahalanobis": self.penultimate(features(x).numpy()),
        }
        if self.squeeze is not None:
            found["squeeze"] = self.squeeze(probabilities, x)
        return found

    def __call__(
        self, features: Features, probabilities: Probabilities, x: torch.Tensor
    ) -> Detection:
        scores = self.scores(features, probabilities, x)
        flagged = np.zeros(len(x), dtype=bool)
        for name, values in scores.items():
            flagged |= values > self.thresholds[name]
        return Detection(flagged=flagged, scores=scores)
