"""FGSM and PGD: budgets and ranges respected, the model untouched, stronger than FGSM."""

from __future__ import annotations

import pytest
import torch

from bastion.errors import InvalidInput
from bastion.evaluate.attacks import Norm, fgsm, pgd
from bastion.train.config import TrainConfig
from bastion.train.models import BuiltinModel, build_model
from bastion.train.trainer import Trainer


@pytest.fixture(scope="module")
def trained(digits_tensors: tuple[torch.Tensor, torch.Tensor]) -> torch.nn.Module:
    x, y = digits_tensors
    model = build_model(BuiltinModel(builtin="cnn"), input_shape=(1, 8, 8), classes=10)
    Trainer(TrainConfig(epochs=4, lr=0.05)).fit(model, x, y)
    return model.eval()


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_attacks_stay_within_budget_and_range(
    trained: torch.nn.Module, digits_tensors: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = digits_tensors[0][:300], digits_tensors[1][:300]
    before = [p.detach().clone() for p in trained.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in trained.parameters()]
    linf = pgd(trained, x, y, eps=0.1, steps=10, generator=torch.Generator().manual_seed(0))
    assert float((linf - x).abs().max()) <= 0.1 + 1e-6
    l2 = pgd(trained, x, y, eps=0.5, steps=10, norm=Norm.L2)
    assert float((l2 - x).flatten(1).norm(dim=1).max()) <= 0.5 + 1e-5
    for adversarial in (linf, l2, fgsm(trained, x, y, eps=0.1)):
        assert float(adversarial.min()) >= 0.0 and float(adversarial.max()) <= 1.0
    for parameter, saved, grad in zip(trained.parameters(), before, grads, strict=True):
        assert torch.equal(parameter, saved) and parameter.requires_grad
        if grad is None:
            assert parameter.grad is None
        else:
            assert parameter.grad is not None and torch.equal(parameter.grad, grad)


def test_pgd_is_at_least_as_strong_as_fgsm_and_hurts_accuracy(
    trained: torch.nn.Module, digits_tensors: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = digits_tensors[0][:500], digits_tensors[1][:500]
    clean = _accuracy(trained, x, y)
    after_fgsm = _accuracy(trained, fgsm(trained, x, y, eps=0.1), y)
    after_pgd = _accuracy(trained, pgd(trained, x, y, eps=0.1, steps=20, restarts=2), y)
    assert clean > 0.9
    assert after_pgd <= after_fgsm < clean
    assert after_pgd < clean - 0.2
    # eps 0 changes nothing.
    assert torch.equal(pgd(trained, x, y, eps=0.0, steps=3), x)


def test_bad_budgets_are_refused(trained: torch.nn.Module) -> None:
    x, y = torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)
    with pytest.raises(InvalidInput, match="eps"):
        fgsm(trained, x, y, eps=-1)
    with pytest.raises(InvalidInput, match="range"):
        pgd(trained, x, y, eps=0.1, lower=1.0, upper=0.0)
    with pytest.raises(InvalidInput, match="steps"):
        pgd(trained, x, y, eps=0.1, steps=0)
