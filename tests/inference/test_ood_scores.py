"""The input detector's parts on inputs small enough to work out by hand: the trust score,
the combined score and its split-conformal threshold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bastion.evaluate.attacks import Lattice
from bastion.inference.guards.ood import (
    Combined,
    InputDetector,
    PixelDensity,
    Probe,
    TrustScore,
    conformal_threshold,
)


def _probe(x: list[list[float]], predicted: list[int]) -> Probe:
    """Inputs the model answers with ``predicted`` (probability 1)."""
    answers = torch.nn.functional.one_hot(torch.tensor(predicted), 3).float()
    return Probe(
        torch.tensor(x),
        features=lambda rows: rows,
        probabilities=lambda rows: answers[: len(rows)],
    )


# Class 0 sits at x = 0, class 1 at x = 10, class 2 at x = 20 (two rows each, 1 apart in y).
_TRUST = TrustScore(
    rows=torch.tensor([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0], [20.0, 0.0], [20.0, 1.0]]),
    labels=torch.tensor([0, 0, 1, 1, 2, 2]),
    classes=3,
    neighbours=2,
)


def test_trust_score_is_the_predicted_class_distance_over_the_nearest_other_class() -> None:
    # (1, 0.5) is 1.118 from each class-0 row, 9.014 from each class-1 row, 19.007 from
    # class 2: answered 0 it is trusted, answered 1 or 2 it is not.
    scores = _TRUST(_probe([[1.0, 0.5], [1.0, 0.5], [1.0, 0.5]], [0, 1, 2]))
    assert scores == pytest.approx([1.118 / 9.014, 9.014 / 1.118, 19.007 / 1.118], rel=1e-3)


def test_trust_score_keeps_a_bounded_seeded_sample_of_the_training_rows() -> None:
    x = torch.arange(40.0).reshape(20, 1, 2)
    y = torch.arange(20) % 2
    kept = TrustScore.fit(x, y, classes=2, seed=3, most=8)
    assert kept.rows.shape == (8, 2) and kept.classes == 2
    again = TrustScore.fit(x, y, classes=2, seed=3, most=8)
    assert torch.equal(kept.rows, again.rows) and torch.equal(kept.labels, again.labels)
    # Each kept row keeps its own label: the rows are 2i, 2i+1 with label i % 2.
    assert torch.equal(kept.labels, (kept.rows[:, 0] / 2).long() % 2)


def test_a_class_the_sample_lacks_never_looks_nearer() -> None:
    only_zero = TrustScore(
        rows=torch.tensor([[0.0, 0.0]]), labels=torch.tensor([0]), classes=3, neighbours=3
    )
    scores = only_zero(_probe([[5.0, 0.0], [5.0, 0.0]], [0, 1]))
    assert scores[0] == 0.0  # no other class has rows: nothing is nearer
    assert np.isinf(scores[1])  # answered with a class no row has: no trust at all


def test_pixel_density_is_minus_the_mean_log_smoothed_frequency_of_each_pixels_level() -> None:
    # Levels 0, 1, 2 (step 0.5). Pixel 0 is 0 in all 3 training images; pixel 1 is 0, 1, 2.
    x = torch.tensor([[0.0, 0.0], [0.0, 0.5], [0.0, 1.0]])
    density = PixelDensity.fit(x, lattice=Lattice(step=0.5, lower=0.0, upper=1.0))
    # Add-one counts: pixel 0 -> (4, 1, 1) / 6; pixel 1 -> (2, 2, 2) / 6.
    probe = _probe([[0.0, 0.0], [0.5, 0.0], [1.0, 1.0]], [0, 0, 0])
    expected = [
        -(np.log(4 / 6) + np.log(2 / 6)) / 2,
        -(np.log(1 / 6) + np.log(2 / 6)) / 2,
        -(np.log(1 / 6) + np.log(2 / 6)) / 2,
    ]
    assert density(probe) == pytest.approx(expected)


def test_pixel_density_reads_a_fine_lattice_in_bounded_bins() -> None:
    x = torch.randint(0, 256, (50, 3, 4, 4)) / 255
    density = PixelDensity.fit(x, lattice=Lattice(step=1 / 255, lower=0.0, upper=1.0))
    assert density.log_frequency.shape == (32, 48)  # 256 levels in bins of 8
    assert density.step == pytest.approx(8 / 255)
    assert np.isfinite(density(Probe(x, features=lambda r: r, probabilities=lambda r: r))).all()


def test_an_input_far_out_on_one_score_only_is_out_of_distribution_but_not_flagged() -> None:
    detector = InputDetector(
        components=[],
        combined=Combined(centres={"a": 0.0, "b": 0.0}, scales={"a": 1.0, "b": 1.0}),
        threshold=100.0,
        outliers={"a": 5.0, "b": 5.0},
    )

    scores = {"a": np.array([6.0, 1.0, np.exp(11)]), "b": np.array([1.0, 1.0, 1.0])}
    detector.scores = lambda *_: scores  # type: ignore[method-assign]
    found = detector(lambda r: r, lambda r: r, torch.zeros(3, 1))
    # Row 0: a = 6 is over its own limit 5, combined log(6)^2 = 3.2 is not over 100.
    # Row 1: neither. Row 2: log(e^11)^2 = 121 is over 100, and a is over 5 too.
    assert found.flagged.tolist() == [False, False, True]
    assert found.out_of_distribution.tolist() == [True, False, True]


def test_conformal_threshold_is_the_ceil_n_plus_1_times_1_minus_fpr_th_smallest() -> None:
    values = np.array([7.0, 3.0, 19.0, 1.0, 11.0, 5.0, 13.0, 17.0, 9.0, 15.0])
    # n = 10: fpr 0.2 -> rank ceil(11 * 0.8) = 9 -> 17; fpr 0.5 -> rank 6 -> 11.
    assert conformal_threshold(values, 0.2) == 17.0
    assert conformal_threshold(values, 0.5) == 11.0
    # Below 1 / (n + 1) the rank passes n: the largest value, never beyond it.
    assert conformal_threshold(values, 0.05) == 19.0


def test_combined_score_sums_squared_positive_log_z_scores() -> None:
    # Calibration: logs of a are 0, 1, 2, 3, 4 (median 2, MAD 1); b is e^0 .. e^8 in steps
    # of 2 (median 4, MAD 2).
    calibration = {"a": np.exp([0.0, 1.0, 2.0, 3.0, 4.0]), "b": np.exp([0.0, 2.0, 4.0, 6.0, 8.0])}
    combined = Combined.fit(calibration)
    assert combined.centres == pytest.approx({"a": 2.0, "b": 4.0})
    assert combined.scales == pytest.approx({"a": 1.0, "b": 2.0})
    scores = {"a": np.exp([2.0, 4.0, 5.0, 0.0]), "b": np.exp([4.0, 8.0, 4.0, 12.0])}
    # z: (0, 0), (2, 2), (3, 0), (-2, 4): squared positive parts summed.
    assert combined(scores) == pytest.approx([0.0, 8.0, 9.0, 16.0])


def test_a_score_constant_on_clean_rows_still_has_a_scale() -> None:
    combined = Combined.fit({"a": np.ones(6), "b": np.array([0.0, 0.0, 0.0, 0.0, 1.0, 1.0])})
    assert combined.scales["a"] == 1.0  # no spread at all: unit scale
    assert combined.scales["b"] > 0  # MAD 0 but some spread: its standard deviation
    assert np.isfinite(combined({"a": np.array([0.0]), "b": np.array([0.0])})).all()


def test_infinite_calibration_scores_leave_the_scale_finite_and_nan_scores_are_far_out() -> None:
    combined = Combined.fit({"a": np.array([1.0, np.e, np.e**2, np.inf])})
    assert combined.centres["a"] == 1.0 and combined.scales["a"] == 1.0  # logs 0, 1, 2
    assert Combined.fit({"a": np.full(3, np.inf)}).scales["a"] == 1.0
    assert combined({"a": np.array([np.nan, np.inf, 1.0])}).tolist() == [np.inf, np.inf, 0.0]


def test_the_detector_flags_an_input_its_neighbours_contradict() -> None:
    # 24 held-out rows spread around their class set the detector; an input among the
    # class-0 rows that the model answers with 1 is flagged, one it answers with 0 is not.
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0]])
    held = torch.arange(24) % 3
    x_holdout = centres[held] + torch.randn(24, 2, generator=generator)

    def probabilities(rows: torch.Tensor) -> torch.Tensor:
        nearest = torch.cdist(rows, centres).argmin(dim=1)
        nearest[(rows[:, 0] - 0.5).abs() < 1e-6] = 1  # the contradicted input
        return torch.nn.functional.one_hot(nearest, 3).float()

    clean = {"trust": _TRUST(Probe(x_holdout, features=lambda r: r, probabilities=probabilities))}
    detector = InputDetector(
        components=[_TRUST],
        combined=Combined.fit(clean),
        threshold=conformal_threshold(Combined.fit(clean)(clean), 0.05),
    )
    contradicted = torch.tensor([[0.5, 0.5]])
    assert detector(lambda r: r, probabilities, contradicted).flagged.tolist() == [True]
    assert detector(lambda r: r, probabilities, torch.tensor([[0.4, 0.5]])).flagged.tolist() == [
        False
    ]
