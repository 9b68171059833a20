"""Out-of-distribution and adversarial input detection, fitted on the training data.

Each score is large where an input looks unlike clean data:

- Mahalanobis distance (Lee et al., 2018): class-conditional means and one shared,
  shrunk covariance, of the model's inputs (tables and images) and of its penultimate
  features (tables, and text, whose token ids are no space to measure in); the distance to
  the nearest class. A perturbation that moves an input across
  a decision boundary still leaves it far from every class in input space, where
  training data spans few directions.
- Feature squeezing (Xu et al., 2018), for images: the L1 change of the output
  probabilities when the input's bit depth is reduced to 3 bits.
- Noise stability, for images: the mean L1 change of the probabilities under a few fixed
  patterns of one-level integer noise. A clean image sits deep inside its class; an
  adversarial one, pushed just across a boundary, moves back or elsewhere.

Each score's threshold is the ``1 - fpr / k`` quantile of its value on held-out clean
rows (``k`` scores), so at most about ``fpr`` of clean requests are flagged in all. The
held-out rows are split: one part sets the thresholds, the other, never used for them,
measures the false-positive rate actually reached (:attr:`InputDetector.held_out`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar, Protocol

import numpy as np
import torch
from sklearn.covariance import LedoitWolf

from bastion.errors import InvalidInput
from bastion.evaluate.attacks import Lattice
from bastion.inference.config import OodAction

__all__ = [
    "Detection",
    "FeatureMahalanobis",
    "HeldOutCheck",
    "InputDetector",
    "InputMahalanobis",
    "MahalanobisScore",
    "NoiseScore",
    "OodAction",
    "Probe",
    "Score",
    "SqueezeScore",
    "calibration_split",
]

Probabilities = Callable[[torch.Tensor], torch.Tensor]
Features = Callable[[torch.Tensor], torch.Tensor]

#: Fixed noise patterns the noise-stability score applies to every image.
NOISE_DRAWS = 8
#: Fewer rows than this leave a ``1 - fpr / k`` quantile meaningless.
_MIN_CALIBRATION_ROWS = 10


class Probe:
    """One batch as the scores see it; the clean probabilities are computed once."""

    def __init__(self, x: torch.Tensor, *, features: Features, probabilities: Probabilities):
        self.x = x
        self.features = features
        self.probabilities = probabilities

    @cached_property
    def clean(self) -> torch.Tensor:
        with torch.inference_mode():
            return self.probabilities(self.x)

    def change(self, changed: torch.Tensor) -> np.ndarray:
        """The L1 distance between the probabilities of ``changed`` and of the inputs."""
        with torch.inference_mode():
            return np.asarray((self.probabilities(changed) - self.clean).abs().sum(dim=1))


class Score(Protocol):
    """One detector score: larger means less like the clean rows."""

    name: ClassVar[str]

    def __call__(self, probe: Probe) -> np.ndarray: ...


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


@dataclass(frozen=True)
class InputMahalanobis:
    name: ClassVar[str] = "input_mahalanobis"
    distance: MahalanobisScore

    def __call__(self, probe: Probe) -> np.ndarray:
        return self.distance(probe.x.flatten(1).numpy())


@dataclass(frozen=True)
class FeatureMahalanobis:
    name: ClassVar[str] = "feature_mahalanobis"
    distance: MahalanobisScore

    def __call__(self, probe: Probe) -> np.ndarray:
        return self.distance(probe.features(probe.x).numpy())


@dataclass(frozen=True)
class SqueezeScore:
    name: ClassVar[str] = "squeeze"
    bits: int = 3

    def __call__(self, probe: Probe) -> np.ndarray:
        levels = 2**self.bits - 1
        return probe.change(torch.round(probe.x.clamp(0, 1) * levels) / levels)


@dataclass(frozen=True)
class NoiseScore:
    name: ClassVar[str] = "noise"
    patterns: torch.Tensor  # (draws, *input shape): -1, 0 or +1 steps per input
    step: float
    lower: float
    upper: float

    @classmethod
    def fit(cls, *, shape: tuple[int, ...], lattice: Lattice, draws: int, seed: int) -> NoiseScore:
        generator = torch.Generator().manual_seed(seed)
        patterns = torch.randint(-1, 2, (draws, *shape), generator=generator).float()
        return cls(patterns=patterns, step=lattice.step, lower=lattice.lower, upper=lattice.upper)

    def __call__(self, probe: Probe) -> np.ndarray:
        total = np.zeros(len(probe.x))
        for pattern in self.patterns:
            noisy = (probe.x + pattern * self.step).clamp(self.lower, self.upper)
            total += probe.change(noisy)
        return total / len(self.patterns)


def calibration_split(rows: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Held-out row indices in two halves: thresholds come from the first, the check of
    the false-positive rate from the second (never used for the thresholds)."""
    order = np.random.default_rng(seed).permutation(rows)
    half = rows // 2
    return np.sort(order[:half]), np.sort(order[half:])


@dataclass(frozen=True)
class HeldOutCheck:
    """The share of clean held-out rows flagged, on rows no threshold was set on."""

    rows: int
    flagged: float


@dataclass(frozen=True)
class Detection:
    flagged: np.ndarray  # bool per instance
    scores: dict[str, np.ndarray]


class InputDetector:
    """Mahalanobis in input space (tables, images) and feature space (tables, text); feature
    squeezing and noise stability (images)."""

    def __init__(
        self,
        *,
        components: list[Score],
        thresholds: dict[str, float],
        held_out: HeldOutCheck | None = None,
    ) -> None:
        self.components = components
        self.thresholds = thresholds
        self.held_out = held_out

    @classmethod
    def fit(
        cls,
        *,
        features: Features,
        probabilities: Probabilities,
        x_fit: torch.Tensor,
        y_fit: torch.Tensor,
        x_holdout: torch.Tensor,
        lattice: Lattice | None,
        images: bool,
        text: bool = False,
        fpr: float = 0.02,
        seed: int = 0,
    ) -> InputDetector:
        """Fit on training rows; set thresholds on half the held-out rows, check them on
        the other half. ``lattice`` is the images' valid pixels (None: float pixels, whose
        noise is then 1/16 of the range)."""
        # (1) Each score is fitted on the training rows.
        labels = y_fit.numpy()
        components: list[Score]
        if text:  # token ids are not a space to measure distances in; the text's encoding is
            penultimate = MahalanobisScore.fit(features(x_fit).numpy(), labels)
            return cls._calibrated(
                [FeatureMahalanobis(penultimate)],
                features=features,
                probabilities=probabilities,
                x_holdout=x_holdout,
                fpr=fpr,
                seed=seed,
            )
        inputs = InputMahalanobis(MahalanobisScore.fit(x_fit.flatten(1).numpy(), labels))
        if images:
            grid = lattice or Lattice(step=1 / 16, lower=0.0, upper=1.0)
            noise = NoiseScore.fit(
                shape=tuple(x_fit.shape[1:]), lattice=grid, draws=NOISE_DRAWS, seed=seed
            )
            components = [inputs, SqueezeScore(), noise]
        else:
            penultimate = MahalanobisScore.fit(features(x_fit).numpy(), labels)
            components = [inputs, FeatureMahalanobis(penultimate)]
        return cls._calibrated(
            components,
            features=features,
            probabilities=probabilities,
            x_holdout=x_holdout,
            fpr=fpr,
            seed=seed,
        )

    @classmethod
    def _calibrated(
        cls,
        components: list[Score],
        *,
        features: Features,
        probabilities: Probabilities,
        x_holdout: torch.Tensor,
        fpr: float,
        seed: int,
    ) -> InputDetector:
        detector = cls(components=components, thresholds={})
        # (2) The held-out rows are split: one half sets the thresholds ...
        calibrate, check = calibration_split(len(x_holdout), seed=seed)
        if len(calibrate) < _MIN_CALIBRATION_ROWS:
            raise InvalidInput(
                f"{len(x_holdout)} held-out rows cannot calibrate the input detector; "
                f"hold out at least {2 * _MIN_CALIBRATION_ROWS} rows when training"
            )
        found = detector.scores(features, probabilities, x_holdout[calibrate])
        detector.thresholds = {
            name: float(np.quantile(values, 1 - fpr / len(found))) for name, values in found.items()
        }
        # (3) ... the other, which no threshold saw, measures the false-positive rate.
        if len(check):
            flagged = detector(features, probabilities, x_holdout[check]).flagged
            detector.held_out = HeldOutCheck(rows=len(check), flagged=float(flagged.mean()))
        return detector

    def scores(
        self, features: Features, probabilities: Probabilities, x: torch.Tensor
    ) -> dict[str, np.ndarray]:
        probe = Probe(x, features=features, probabilities=probabilities)
        return {score.name: score(probe) for score in self.components}

    def __call__(
        self, features: Features, probabilities: Probabilities, x: torch.Tensor
    ) -> Detection:
        scores = self.scores(features, probabilities, x)
        flagged = np.zeros(len(x), dtype=bool)
        for name, values in scores.items():
            flagged |= values > self.thresholds[name]
        return Detection(flagged=flagged, scores=scores)
