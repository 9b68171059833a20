"""The input detector against adversarial inputs the server accepts (integer pixels), its
thresholds set on held-out rows other than those its false-positive rate is measured on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bastion.evaluate.attacks import pgd
from bastion.inference.app import Loaded
from bastion.inference.config import ServeConfig
from bastion.inference.guards.ood import InputDetector, calibration_split
from bastion.inference.guards.validate import RequestInvalid, RequestValidator
from bastion.inference.model import ServedModel, load_verified
from bastion.inference.runtime import fit_guards, served_lattice
from tests.inference.conftest import Workload, unseen_rows


@pytest.fixture(scope="module")
def served(digits_workload: Workload) -> ServedModel:
    keys = [digits_workload.keyring.primary_signing_key().public_pem]
    return load_verified(digits_workload.folder, public_keys=keys)


@pytest.fixture(scope="module")
def guarded(digits_workload: Workload, served: ServedModel) -> Loaded:
    """The guards a deployment fits: every held-out row goes in, half set the thresholds."""
    w = digits_workload
    return fit_guards(
        served,
        x_train=w.x[w.train_rows],
        y_train=w.y[w.train_rows],
        x_holdout=w.x[w.test_rows],
        config=ServeConfig(),
    )


def test_integer_pgd_examples_are_inputs_the_validator_accepts_and_float_ones_are_not(
    digits_workload: Workload, served: ServedModel
) -> None:
    rows = digits_workload.test_rows[:64]
    x, y = digits_workload.x[rows], digits_workload.y[rows]
    validator = RequestValidator(schema=served.schema, prep=served.prep, max_batch=256)
    generator = torch.Generator().manual_seed(0)
    lattice = served_lattice(served)
    assert lattice is not None  # digits pixels are integers 0..16
    integers = pgd(served.model, x, y, eps=0.2, steps=10, lattice=lattice, generator=generator)
    pixels = (integers * 16).squeeze(1).numpy()
    accepted = validator({"instances": pixels.astype(int).tolist()})
    assert torch.equal(accepted, integers)  # what the server feeds the model, exactly
    floats = pgd(served.model, x, y, eps=0.2, steps=10, generator=generator)
    with pytest.raises(RequestInvalid, match="pixels must be integers"):
        validator({"instances": (floats * 16).squeeze(1).tolist()})


def test_thresholds_are_not_set_on_the_rows_the_false_positive_rate_is_measured_on(
    digits_workload: Workload, served: ServedModel
) -> None:
    w = digits_workload
    holdout = w.x[w.test_rows]
    calibrate, check = calibration_split(len(holdout), seed=0)
    assert len(np.intersect1d(calibrate, check)) == 0
    assert len(calibrate) + len(check) == len(holdout)

    def fitted(rows: torch.Tensor) -> InputDetector:
        return InputDetector.fit(
            features=served.features,
            probabilities=served.probabilities,
            x_fit=w.x[w.train_rows],
            y_fit=w.y[w.train_rows],
            x_holdout=rows,
            lattice=served_lattice(served),
            images=True,
        )

    detector = fitted(holdout)
    noise = torch.randint(
        0, 17, (len(holdout), 1, 8, 8), generator=torch.Generator().manual_seed(0)
    )
    # Noise in the check half moves no threshold, and the check sees it ...
    checked = holdout.clone()
    checked[check] = noise[check] / 16
    again = fitted(checked)
    assert again.thresholds == detector.thresholds
    assert detector.held_out is not None and again.held_out is not None
    assert detector.held_out.rows == len(check) and detector.held_out.flagged <= 0.05
    assert again.held_out.flagged > 0.9
    # ... while noise in the calibration half does move them.
    calibrated = holdout.clone()
    calibrated[calibrate] = noise[calibrate] / 16
    assert fitted(calibrated).thresholds != detector.thresholds


def test_most_successful_white_box_integer_pgd_at_eps_0_2_is_flagged(
    digits_workload: Workload, guarded: Loaded
) -> None:
    served, detector = guarded.served, guarded.detector
    assert detector is not None and detector.held_out is not None
    unseen = unseen_rows(digits_workload)[1]
    x, y = digits_workload.x[unseen], digits_workload.y[unseen]
    detection = detector(served.features, served.probabilities, x)
    assert set(detection.scores) == {
        "input_mahalanobis",
        "squeeze",
        "noise",
        "trust",
        "pixel_density",
        "combined",
    }
    clean = detection.flagged
    # The rows the server's own check used are these: the same false-positive rate.
    assert detector.held_out.flagged == pytest.approx(float(clean.mean()))
    lattice = served_lattice(served)
    adversarial = pgd(
        served.model,
        x,
        y,
        eps=0.2,
        steps=20,
        lattice=lattice,
        generator=torch.Generator().manual_seed(0),
    )
    with torch.no_grad():
        fooled = (served.model(adversarial).argmax(1) != y).numpy()
    flagged = detector(served.features, served.probabilities, adversarial[fooled]).flagged
    print(
        f"white-box integer PGD eps 0.2: fools {fooled.mean():.2f}, {flagged.mean():.2f} of "
        f"those flagged; clean unseen rows flagged {clean.mean():.3f}"
    )
    assert fooled.mean() > 0.8
    # Measured 0.85 to 0.98 over the fixture's random initialisations (0.99 the benchmark's
    # median, docs/benchmarks.md).
    assert flagged.mean() >= 0.8
    assert clean.mean() <= 0.05
