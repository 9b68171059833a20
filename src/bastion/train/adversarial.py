"""Adversarial training as a trainer hook (Madry et al.): attack part of every batch.

On ``BATCH_START`` the first ``ratio`` of the batch is replaced by adversarial copies made
with :mod:`bastion.evaluate.attacks` (the same code the evaluation uses) against the
current model, within the valid input range.
"""

from __future__ import annotations

import math

import torch

from bastion.evaluate.attacks import Attack, Bound, Norm, run_attack
from bastion.train.config import AdversarialConfig
from bastion.train.trainer import Event, TrainState

__all__ = ["AdversarialHook"]


class AdversarialHook:
    def __init__(self, config: AdversarialConfig, *, lower: Bound, upper: Bound) -> None:
        self.config = config
        self.lower, self.upper = lower, upper

    def __call__(self, event: Event, state: TrainState) -> None:
        if event is not Event.BATCH_START or state.x is None or state.y is None:
            return
        count = math.ceil(self.config.ratio * len(state.y))
        if count == 0:
            return
        model = state.model
        lower, upper = self.lower, self.upper
        if isinstance(lower, torch.Tensor):  # the bounds follow the batch (cuda)
            lower = lower.to(state.x.device)
        if isinstance(upper, torch.Tensor):
            upper = upper.to(state.x.device)
        was_training = model.training
        model.eval()
        attacked = run_attack(
            Attack(self.config.attack),
            model,
            state.x[:count],
            state.y[:count],
            eps=self.config.eps,
            steps=self.config.steps,
            norm=Norm(self.config.norm),
            lower=lower,
            upper=upper,
            generator=state.generators["attack"],
        )
        model.train(was_training)
        state.x = torch.cat([attacked, state.x[count:]])
