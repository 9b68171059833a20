"""The shortcuts on the training path change speed, never results.

* Opacus's per-order RDP is remembered (``bastion.train.dp_sgd``): the epsilon an
  accountant reports must equal what Opacus's own uncached function gives.
* Batches are fetched a batch at a time (``bastion.train.trainer.Rows``): the loader must
  yield exactly the rows the per-row path yields, Poisson sampling's empty draw included.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.analysis import rdp
from opacus.data_loader import DPDataLoader
from torch.utils.data import DataLoader, Dataset, TensorDataset

import bastion.train.dp_sgd  # noqa: F401  (installs the memo)
from bastion.train.trainer import Rows, batch_as_is

ORDERS = [1.5, 2.0, 3.5, 8.0, 32.0]


def test_the_remembered_rdp_is_opacus_own_value() -> None:
    uncached = rdp._compute_rdp.__wrapped__
    for q, sigma in [(0.15, 0.9), (0.02, 1.3), (1.0, 4.0)]:
        expected = np.array([uncached(q, sigma, order) for order in ORDERS]) * 37
        first = rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=37, orders=ORDERS)
        again = rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=37, orders=ORDERS)
        assert np.array_equal(first, expected) and np.array_equal(again, expected)
    assert rdp._compute_rdp.cache_info().hits >= len(ORDERS) * 3


@pytest.mark.parametrize("kind", [RDPAccountant, PRVAccountant])
def test_accountants_report_growing_epsilons_that_repeat_exactly(kind: Any) -> None:
    def epsilons() -> list[float]:
        accountant = kind()
        spent = []
        for _epoch in range(3):
            for _step in range(7):
                accountant.step(noise_multiplier=1.1, sample_rate=64 / 427)
            spent.append(float(accountant.get_epsilon(1e-5)))
        return spent

    first, second = epsilons(), epsilons()
    assert first == second  # a remembered value is the value computed the first time
    assert first == sorted(first) and first[0] > 0
    if kind is RDPAccountant:  # the closed form, from Opacus's uncached series
        uncached = rdp._compute_rdp.__wrapped__
        orders = list(RDPAccountant.DEFAULT_ALPHAS)
        values = np.array([uncached(64 / 427, 1.1, a) for a in orders]) * 21
        epsilon, _ = rdp.get_privacy_spent(orders=orders, rdp=values, delta=1e-5)
        assert first[-1] == pytest.approx(float(epsilon), rel=1e-12)


def _batches(loader: DataLoader[tuple[torch.Tensor, ...]]) -> list[tuple[torch.Tensor, ...]]:
    return [tuple(part.clone() for part in batch) for batch in loader]


def test_rows_give_the_batches_of_a_tensor_dataset() -> None:
    x, y = torch.randn(50, 3), torch.arange(50)
    fast = DataLoader(
        Rows(x, y),
        batch_size=8,
        shuffle=True,
        generator=torch.Generator().manual_seed(4),
        collate_fn=batch_as_is,
    )
    slow = DataLoader(
        TensorDataset(x, y), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(4)
    )
    got, want = _batches(fast), _batches(slow)
    assert len(got) == len(want) == 7
    for (gx, gy), (wx, wy) in zip(got, want, strict=True):
        assert torch.equal(gx, wx) and torch.equal(gy, wy)
    with pytest.raises(ValueError, match="differ in length"):
        Rows(x, y[:3])


def test_poisson_batches_from_rows_match_and_may_be_empty() -> None:
    x, y = torch.randn(40, 3), torch.arange(40)

    def poisson(
        dataset: Dataset[tuple[torch.Tensor, ...]], **kw: Any
    ) -> list[tuple[torch.Tensor, ...]]:
        plain = DataLoader(dataset, batch_size=2, **kw)
        seeded = torch.Generator().manual_seed(1)
        return _batches(DPDataLoader.from_data_loader(plain, generator=seeded))

    got = poisson(Rows(x, y), collate_fn=batch_as_is)
    want = poisson(TensorDataset(x, y))
    assert len(got) == len(want) == 20
    for (gx, gy), (wx, wy) in zip(got, want, strict=True):
        assert torch.equal(gx, wx) and torch.equal(gy, wy)
    # At rate 1/20 over 40 rows some draws are empty: they keep the feature shape.
    empty = [batch for batch in got if len(batch[1]) == 0]
    assert empty, "the seed was chosen to draw an empty batch"
    assert all(batch[0].shape == (0, 3) and batch[1].dtype == y.dtype for batch in empty)
