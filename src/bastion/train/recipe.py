"""A run's training recipe as hooks: what the target model and its shadow models share.

The membership-inference audit trains shadow models "under the same recipe as the
target, including DP": they get their hooks here, as the training job does.
"""

from __future__ import annotations

from torch import nn

from bastion.evaluate.attacks import Bound
from bastion.train.adversarial import AdversarialHook
from bastion.train.config import TrainConfig
from bastion.train.trainer import Hook

__all__ = ["recipe"]


def recipe(
    model: nn.Module,
    config: TrainConfig,
    *,
    lower: Bound,
    upper: Bound,
    account: bool = True,
) -> tuple[nn.Module, list[Hook], list[str]]:
    """The model made DP-compatible where needed, the recipe's hooks, and what was replaced.

    Privacy comes first (it swaps the optimiser and loader), adversarial training after.
    ``account=False`` trains without tracking epsilon (shadow models).
    """
    hooks: list[Hook] = []
    replaced: list[str] = []
    if config.privacy is not None:
        # Opacus is imported only by private runs (it takes seconds to import).
        from bastion.train.dp_sgd import PrivacyHook, make_private_compatible  # noqa: PLC0415

        model, replaced = make_private_compatible(model)
        hooks.append(PrivacyHook(config.privacy, account=account))
    if config.adversarial is not None:
        hooks.append(AdversarialHook(config.adversarial, lower=lower, upper=upper))
    return model, hooks, replaced
