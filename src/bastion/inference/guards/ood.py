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
- Trust score (Jiang et al., 2018), for images: the distance to the nearest training rows
  of the predicted class over that to the nearest other class. The model's answer for an
  adversarial input disagrees with the input's neighbours.
- Pixel density, for images: minus the mean log frequency of each pixel's level at its
  position among the training images. An L-infinity perturbation moves every pixel, the
  background too, where clean images almost never differ.

The scores are combined into one (:class:`Combined`): each score's logarithm becomes a
robust z-score (median and median absolute deviation on clean held-out rows), and the
positive parts, squared, are summed. An input a little unusual on every score counts, and
none of the false-positive budget is spent twice on clean rows that several scores flag
together. The threshold is the split-conformal quantile of the combined score on held-out
clean rows, so at most about ``fpr`` of clean requests are flagged. The held-out rows are
split: one part sets the centres, scales and threshold, the other, never used for them,
measures the false-positive rate actually reached (:attr:`InputDetector.held_out`).

The extraction guard also counts an input beyond any one score's own ``1 - fpr / k`` clean
quantile (:attr:`Detection.out_of_distribution`): a thief's queries are often far out on
one score only, which a sum of scores dilutes.
"""

from __future__ import annotations

import math
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
    "Combined",
    "Detection",
    "FeatureMahalanobis",
    "HeldOutCheck",
    "InputDetector",
    "InputMahalanobis",
    "MahalanobisScore",
    "NoiseScore",
    "OodAction",
    "PixelDensity",
    "Probe",
    "Score",
    "SqueezeScore",
    "TrustScore",
    "calibration_split",
    "conformal_threshold",
]

Probabilities = Callable[[torch.Tensor], torch.Tensor]
Features = Callable[[torch.Tensor], torch.Tensor]

#: Fixed noise patterns the noise-stability score applies to every image.
NOISE_DRAWS = 8
#: The most levels the pixel density tells apart.
DENSITY_BINS = 32
#: Training rows the trust score keeps (a seeded sample of them where there are more).
TRUST_ROWS = 10_000
#: Fewer rows than this leave a threshold at a small false-positive rate meaningless.
_MIN_CALIBRATION_ROWS = 10
#: The power the positive z-scores are raised to before they are summed: 1 adds them
#: (one score far out is diluted), large powers keep only the largest (the union of the
#: scores). Chosen on seeds other than the ones the benchmark reports (docs/security.md 9.5).
POWER = 2.0
#: Scores are compared on a log scale; this floor keeps a zero score finite.
_LOG_FLOOR = 1e-12


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
class TrustScore:
    """How much nearer the input is to training rows of another class than to those of the
    class the model predicts (Jiang et al., 2018, "To trust or not to trust a classifier"):
    the mean distance to the ``neighbours`` nearest training rows of the predicted class over
    the same for the nearest other class. A clean input sits among rows of the class it is
    given; a small perturbation that changes the model's answer leaves it there."""

    name: ClassVar[str] = "trust"
    rows: torch.Tensor  # (n, d) training inputs, flattened
    labels: torch.Tensor  # (n,) their class indices 0..classes-1
    classes: int
    neighbours: int = 3

    @classmethod
    def fit(
        cls, x: torch.Tensor, y: torch.Tensor, *, classes: int, seed: int, most: int = TRUST_ROWS
    ) -> TrustScore:
        keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:most]
        return cls(rows=x[keep].flatten(1).float(), labels=y[keep].long(), classes=classes)

    def per_class(self, x: torch.Tensor) -> torch.Tensor:
        """(inputs, classes): the mean distance to each class's nearest training rows
        (infinite for a class with no rows kept)."""
        distances = torch.cdist(x.flatten(1).float(), self.rows)
        found = torch.full((len(x), self.classes), float("inf"))
        for c in range(self.classes):
            own = distances[:, self.labels == c]
            if own.shape[1]:
                k = min(self.neighbours, own.shape[1])
                found[:, c] = own.topk(k, dim=1, largest=False).values.mean(dim=1)
        return found

    def __call__(self, probe: Probe) -> np.ndarray:
        with torch.inference_mode():
            found = self.per_class(probe.x)
            predicted = probe.clean.argmax(dim=1)
            own = found.gather(1, predicted[:, None])[:, 0]
            others = found.scatter(1, predicted[:, None], float("inf")).amin(dim=1)
            return np.asarray(own / others.clamp(min=1e-12))


@dataclass(frozen=True)
class PixelDensity:
    """How rare each pixel's value is where it sits: minus the mean log frequency of the
    pixel's level among the training images at that position (add-one smoothed). A digit's
    background is almost always 0; noise on it, or one level added there, is rare."""

    name: ClassVar[str] = "pixel_density"
    log_frequency: torch.Tensor  # (levels, pixels)
    step: float
    lower: float

    @classmethod
    def fit(cls, x: torch.Tensor, *, lattice: Lattice) -> PixelDensity:
        levels = round((lattice.upper - lattice.lower) / lattice.step) + 1
        # Fine lattices (0..255) are read in at most DENSITY_BINS bins: the table stays small.
        width = math.ceil(levels / DENSITY_BINS)
        step, bins = lattice.step * width, math.ceil(levels / width)
        index = cls._levels(x.flatten(1), step, lattice.lower, bins)
        counts = torch.ones(bins, index.shape[1])
        counts.scatter_add_(0, index, torch.ones_like(index, dtype=torch.float))
        return cls(log_frequency=(counts / counts.sum(dim=0)).log(), step=step, lower=lattice.lower)

    @staticmethod
    def _levels(x: torch.Tensor, step: float, lower: float, levels: int) -> torch.Tensor:
        return torch.round((x - lower) / step).long().clamp(0, levels - 1)

    def __call__(self, probe: Probe) -> np.ndarray:
        index = self._levels(probe.x.flatten(1), self.step, self.lower, len(self.log_frequency))
        return np.asarray(-self.log_frequency.gather(0, index).mean(dim=1))


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


def conformal_threshold(values: np.ndarray, fpr: float) -> float:
    """The split-conformal threshold: the ``ceil((n + 1)(1 - fpr))``-th smallest of ``n``
    clean values, so a new clean row exceeds it with probability at most ``fpr``."""
    ordered = np.sort(values)
    rank = min(int(np.ceil((len(ordered) + 1) * (1 - fpr))), len(ordered))
    return float(ordered[rank - 1])


@dataclass(frozen=True)
class Combined:
    """The scores as one: robust z-scores of their logarithms, positive parts to ``power``,
    summed."""

    centres: dict[str, float]
    scales: dict[str, float]
    power: float = POWER

    @classmethod
    def fit(cls, found: dict[str, np.ndarray]) -> Combined:
        centres: dict[str, float] = {}
        scales: dict[str, float] = {}
        for name, values in found.items():
            logs = np.log(np.maximum(values, _LOG_FLOOR))
            logs = logs[np.isfinite(logs)]  # an infinite score is an outlier, not a scale
            if not len(logs):
                centres[name], scales[name] = 0.0, 1.0
                continue
            centre = float(np.median(logs))
            spread = float(np.median(np.abs(logs - centre))) or float(logs.std()) or 1.0
            centres[name], scales[name] = centre, spread
        return cls(centres=centres, scales=scales)

    def __call__(self, scores: dict[str, np.ndarray]) -> np.ndarray:
        total = np.zeros(len(next(iter(scores.values()))))
        for name, values in scores.items():
            z = (np.log(np.maximum(values, _LOG_FLOOR)) - self.centres[name]) / self.scales[name]
            # A score that cannot be computed (NaN) counts as far out: fail closed.
            with np.errstate(over="ignore"):
                total += np.maximum(np.nan_to_num(z, nan=np.inf), 0.0) ** self.power
        return total


def _scores(
    components: list[Score], features: Features, probabilities: Probabilities, x: torch.Tensor
) -> dict[str, np.ndarray]:
    probe = Probe(x, features=features, probabilities=probabilities)
    return {score.name: score(probe) for score in components}


@dataclass(frozen=True)
class HeldOutCheck:
    """The share of clean held-out rows flagged, on rows no threshold was set on."""

    rows: int
    flagged: float


@dataclass(frozen=True)
class Detection:
    flagged: np.ndarray  # bool per instance: the combined score over its threshold
    scores: dict[str, np.ndarray]
    #: Flagged, or beyond one score's own ``1 - fpr / k`` clean quantile: what the extraction
    #: guard counts as out of distribution. A thief's queries are often far out on one score
    #: only (noise on every pixel: the pixel density), which a sum of scores dilutes.
    out_of_distribution: np.ndarray


class InputDetector:
    """Mahalanobis in input space (tables, images) and feature space (tables, text); feature
    squeezing, noise stability, the trust score and pixel density (images)."""

    def __init__(
        self,
        *,
        components: list[Score],
        combined: Combined,
        threshold: float,
        outliers: dict[str, float] | None = None,
        held_out: HeldOutCheck | None = None,
    ) -> None:
        self.components = components
        self.combined = combined
        self.threshold = threshold
        self.outliers = outliers or {}
        self.held_out = held_out

    @property
    def thresholds(self) -> dict[str, float]:
        """What the calibration rows set: the combined threshold, each score's centre and
        scale, and each score's own limit (``<name>.outlier``)."""
        found = {"combined": self.threshold}
        for name, centre in self.combined.centres.items():
            found[f"{name}.centre"] = centre
            found[f"{name}.scale"] = self.combined.scales[name]
        found.update({f"{name}.outlier": value for name, value in self.outliers.items()})
        return found

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
            with torch.inference_mode():
                classes = probabilities(x_fit[:1]).shape[1]
            trust = TrustScore.fit(x_fit, y_fit, classes=classes, seed=seed)
            components = [
                inputs,
                SqueezeScore(),
                noise,
                trust,
                PixelDensity.fit(x_fit, lattice=grid),
            ]
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
        # (2) The held-out rows are split: one half sets the centres, scales and threshold ...
        calibrate, check = calibration_split(len(x_holdout), seed=seed)
        if len(calibrate) < _MIN_CALIBRATION_ROWS:
            raise InvalidInput(
                f"{len(x_holdout)} held-out rows cannot calibrate the input detector; "
                f"hold out at least {2 * _MIN_CALIBRATION_ROWS} rows when training"
            )
        found = _scores(components, features, probabilities, x_holdout[calibrate])
        combined = Combined.fit(found)
        threshold = conformal_threshold(combined(found), fpr)
        outliers = {
            name: float(np.quantile(values, 1 - fpr / len(found))) for name, values in found.items()
        }
        detector = cls(
            components=components, combined=combined, threshold=threshold, outliers=outliers
        )
        # (3) ... the other, which no threshold saw, measures the false-positive rate.
        if len(check):
            flagged = detector(features, probabilities, x_holdout[check]).flagged
            detector.held_out = HeldOutCheck(rows=len(check), flagged=float(flagged.mean()))
        return detector

    def scores(
        self, features: Features, probabilities: Probabilities, x: torch.Tensor
    ) -> dict[str, np.ndarray]:
        return _scores(self.components, features, probabilities, x)

    def __call__(
        self, features: Features, probabilities: Probabilities, x: torch.Tensor
    ) -> Detection:
        scores = self.scores(features, probabilities, x)
        combined = self.combined(scores)
        flagged = combined > self.threshold
        outlying = flagged.copy()
        for name, limit in self.outliers.items():
            outlying |= scores[name] > limit
        return Detection(
            flagged=flagged, scores={**scores, "combined": combined}, out_of_distribution=outlying
        )
