"""Backdoor scan: a BadNets trigger on 5% of digits is found; clean data is left alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bastion.data.backdoor import spectral_scan
from bastion.data.reference import digits
from bastion.errors import InvalidInput

TARGET = 0


def _poisoned(rate: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Digits in [0, 1]; a 2x2 white trigger on ``rate`` of them, relabelled to TARGET."""
    images, labels = digits(seed=seed)
    x = images.astype(np.float32) / 16.0
    y = labels.copy()
    rng = np.random.default_rng(seed)
    chosen = rng.choice(np.flatnonzero(y != TARGET), size=int(rate * len(y)), replace=False)
    x[chosen, 6:8, 6:8] = 1.0
    y[chosen] = TARGET
    poisoned = np.zeros(len(y), dtype=bool)
    poisoned[chosen] = True
    return x, y, poisoned


def _train_cnn(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """The reference small CNN; returns penultimate activations and the trigger's success."""
    torch.manual_seed(0)
    body = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(32 * 16, 64),
        torch.nn.ReLU(),
    )
    model = torch.nn.Sequential(body, torch.nn.Linear(64, 10))
    inputs, targets = torch.tensor(x).unsqueeze(1), torch.tensor(y)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(12):
        order = torch.randperm(len(targets), generator=generator)
        for start in range(0, len(order), 64):
            batch = order[start : start + 64]
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    triggered = inputs.clone()
    triggered[:, :, 6:8, 6:8] = 1.0
    with torch.no_grad():
        activations = body(inputs).numpy()
        hijacked = (model(triggered).argmax(1).numpy() == TARGET)[y != TARGET].mean()
    return activations, float(hijacked)


def test_a_badnets_trigger_is_found_at_a_low_false_positive_rate() -> None:
    x, y, poisoned = _poisoned(0.05)
    activations, attack_success = _train_cnn(x, y)
    assert attack_success > 0.9  # the backdoor really took
    report = spectral_scan(activations, y, x)
    flagged = np.zeros(len(y), dtype=bool)
    flagged[report.flagged] = True
    recall = flagged[poisoned].mean()
    false_positive_rate = flagged[~poisoned].mean()
    # Measured (12 epochs, trigger success 0.95): recall 1.00, false-positive rate 0.0006
    # (30 epochs gave the same for seeds 0, 1 and 2);
    # the next most suspicious class had 72% of its suspect cluster look elsewhere, not 80%.
    assert recall >= 0.8, recall
    assert false_positive_rate < 0.05, false_positive_rate
    summary = report.summary()
    assert summary["poisoned_classes"] == [TARGET]
    assert "flagged" in summary and "indices" not in str(summary)


def test_clean_data_flags_nothing() -> None:
    x, y, _ = _poisoned(0.0)
    activations, _ = _train_cnn(x, y)
    report = spectral_scan(activations, y, x)
    assert report.summary()["poisoned_classes"] == []
    assert len(report.flagged) == 0


def test_misaligned_arrays_are_refused() -> None:
    with pytest.raises(InvalidInput, match="align"):
        spectral_scan(np.zeros((5, 3)), np.zeros(4), np.zeros((5, 2)))
