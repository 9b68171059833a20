"""Data-parallel training over local processes (gloo): what two workers compute, the one
epsilon a private group spends, and a killed worker's group starting again from the last
checkpoint."""

from __future__ import annotations

import contextlib
import copy
import multiprocessing
import os
import signal
from pathlib import Path

import pytest
import torch
from opacus.accountants.utils import create_accountant
from sklearn.datasets import load_digits
from torch import nn

from bastion.train.config import BuiltinModel, PrivacyConfig, TrainConfig
from bastion.train.distributed import Group, WorkerFailed, join, leave
from bastion.train.models import build_model
from bastion.train.parallel import fit_parallel
from bastion.train.recipe import recipe
from bastion.train.trainer import Event, Hook, Trainer, TrainResult, TrainState


def _digits(rows: int = 450) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits()
    return torch.tensor(data.data[:rows], dtype=torch.float32) / 16, torch.tensor(
        data.target[:rows]
    )


def _model(config: TrainConfig) -> nn.Module:
    torch.manual_seed(config.seed)
    model = build_model(BuiltinModel(builtin="mlp", hidden=[32]), input_shape=(64,), classes=10)
    return recipe(model, config, lower=0.0, upper=1.0)[0]


def _alone(config: TrainConfig, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> TrainResult:
    hooks = recipe(copy.deepcopy(model), config, lower=0.0, upper=1.0)[1]
    return Trainer(config, hooks).fit(copy.deepcopy(model), x, y)


def _together(
    config: TrainConfig,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    folder: Path,
    *,
    extra: list[Hook] | None = None,
    restarts: int = 1,
    said: list[str] | None = None,
    sealed: list[int] | None = None,
) -> TrainResult:
    def hooks() -> list[Hook]:
        return [*recipe(model, config, lower=0.0, upper=1.0)[1], *(extra or [])]

    return fit_parallel(
        config,
        model,
        x,
        y,
        world=2,
        hooks=hooks,
        gpus=False,
        lower=0.0,
        upper=1.0,
        folder=folder,
        resume=None,
        on_checkpoint=lambda _path, epoch: (sealed if sealed is not None else []).append(epoch),
        restarts=restarts,
        threads=1,
        say=(said if said is not None else []).append,
    )


def _largest_difference(a: nn.Module, b: nn.Module) -> float:
    return max(
        float((p - q).abs().max())
        for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_two_workers_end_with_the_single_process_model(tmp_path: Path) -> None:
    """Each rank takes its share of the same global batch: DDP's average of the ranks'
    gradients is the global batch's mean gradient, step after step (the last batch of an
    epoch is uneven: 450 rows in batches of 64)."""
    config = TrainConfig(epochs=3, batch_size=64, lr=0.1, seed=3)
    x, y = _digits()
    model = _model(config)
    alone = _alone(config, model, x, y)
    sealed: list[int] = []
    together = _together(config, model, x, y, tmp_path, sealed=sealed)
    assert _largest_difference(alone.model, together.model) < 1e-5
    assert sealed == [1, 2, 3]  # one checkpoint per checkpoint step, not one per worker
    for one, two in zip(alone.history, together.history, strict=True):
        assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
        assert two["accuracy"] == one["accuracy"]  # counted over every rank's rows


def test_two_private_workers_spend_one_epsilon_and_add_the_noise_once(tmp_path: Path) -> None:
    """Opacus's distributed mode: every rank clips its own samples, rank 0 alone adds the
    noise. The accountant's epsilon is the single-process figure for the same sampling
    rate, noise and steps; and the noise in an update is one draw's, not one per worker
    (with every gradient clipped to almost nothing, an update is the noise alone)."""
    privacy = PrivacyConfig(noise_multiplier=1.0, max_grad_norm=1e-6)
    config = TrainConfig(epochs=2, batch_size=50, lr=1.0, seed=5, privacy=privacy)
    x, y = _digits()
    model = _model(config)
    alone = _alone(config, model, x, y)
    together = _together(config, model, x, y, tmp_path)
    steps = 2 * 9  # ceil(450 / 50) expected batches per epoch, at rate 1/9
    accountant = create_accountant(mechanism="prv")
    accountant.history = [(1.0, 1 / 9, steps)]
    expected = accountant.get_epsilon(delta=1e-5)
    assert together.epsilon == pytest.approx(expected, rel=1e-6)
    assert together.epsilon == pytest.approx(alone.epsilon, rel=1e-9)
    assert together.history[-1]["epsilon"] == together.epsilon

    def spread(result: TrainResult) -> float:
        moved = [
            (after - before).flatten()
            for after, before in zip(
                result.model.state_dict().values(), model.state_dict().values(), strict=True
            )
        ]
        return float(torch.cat(moved).std())

    # Noise once: the same spread as one process (noise on both ranks would be 1.41x).
    assert spread(together) / spread(alone) == pytest.approx(1.0, abs=0.1)


class _KillWorker:
    """Rank 0's hook: SIGKILL worker 1 when epoch ``at`` starts, the first time only."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.killed = 0

    def __call__(self, event: Event, state: TrainState) -> None:
        if event is Event.EPOCH_START and state.epoch == self.at and not self.killed:
            for child in multiprocessing.active_children():
                if child.pid is not None:
                    os.kill(child.pid, signal.SIGKILL)
                    self.killed += 1


def test_a_killed_worker_restarts_the_group_from_the_last_checkpoint(tmp_path: Path) -> None:
    config = TrainConfig(epochs=3, batch_size=64, lr=0.1, seed=3)
    x, y = _digits()
    model = _model(config)
    whole = _together(config, model, x, y, tmp_path / "whole")
    killer, said, sealed = _KillWorker(at=2), list[str](), list[int]()
    resumed = _together(
        config, model, x, y, tmp_path / "killed", extra=[killer], said=said, sealed=sealed
    )
    assert killer.killed == 1
    assert said == [
        "worker 1 exited with signal 9; starting the 2 workers again from its last "
        "checkpoint (restart 1 of 1)"
    ]
    assert sealed == [1, 2, 3]  # epoch 3 was written once, by the second start
    assert _largest_difference(whole.model, resumed.model) == 0.0
    assert resumed.history == whole.history


def test_a_group_out_of_restarts_fails_naming_the_worker(tmp_path: Path) -> None:
    config = TrainConfig(epochs=2, batch_size=64, lr=0.1, seed=3)
    x, y = _digits(200)
    with pytest.raises(WorkerFailed) as failed:
        _together(config, _model(config), x, y, tmp_path, extra=[_KillWorker(at=1)], restarts=0)
    assert str(failed.value) == (
        "worker 1 exited with signal 9; the group was started 1 times "
        "(resources.restarts: 0), giving up"
    )


def _gloo_threads() -> int:
    """This process's gloo work threads (two per live gloo group)."""
    count = 0
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):  # another thread that ended meanwhile
            count += (task / "comm").read_text().strip() == "pt_gloo_runloop"
    return count


def test_a_left_group_lives_until_the_next_group_starts(tmp_path: Path) -> None:
    """A failed step's DDP reducer must not free the last reference to its gloo group: that
    joins gloo's threads with the GIL held while one of them waits for the GIL to free the
    failed collective (the restart test above hung so in half its runs). The group outlives
    leaving it and goes, without the GIL, when the next one starts."""
    cpu = torch.device("cpu")
    join(Group(0, 1, tmp_path / "first"), cpu)  # an earlier test's group goes here
    held = _gloo_threads()
    assert held >= 2
    leave()
    assert _gloo_threads() == held  # left, still held
    join(Group(0, 1, tmp_path / "second"), cpu)
    assert _gloo_threads() == held  # the first one's threads are gone, the second's run
    leave()
