"""DP-SGD through Opacus, as a trainer hook.

On ``FIT_START`` the hook checks the model with Opacus's validator (replacing what it
can fix, such as BatchNorm -> GroupNorm, and refusing what it cannot), then wraps model,
optimizer, loss and loader: per-sample clipping in the configured mode (ghost clipping or
hooks), Poisson sampling, calibrated Gaussian noise, and the PRV or RDP accountant.
After every epoch the epsilon spent so far is recorded; the accountant's history rides in
checkpoints so a resumed run accounts for the epochs before the interruption. On
``FIT_END`` Opacus's hooks are removed from the trained module.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from typing import Any

from opacus import PrivacyEngine
from opacus.accountants.analysis import rdp as _rdp
from opacus.accountants.utils import get_noise_multiplier
from opacus.validators import ModuleValidator
from threadpoolctl import ThreadpoolController
from torch import nn

from bastion.errors import InvalidSpec
from bastion.train.config import PrivacyConfig
from bastion.train.trainer import Event, TrainState

__all__ = ["PrivacyHook", "calibrated_noise", "clipping_mode", "make_private_compatible"]

log = logging.getLogger("bastion.train")

# Opacus recomputes the Renyi divergence of one sampled-Gaussian step at every order
# (a slow series in pure Python) each time an epsilon is asked for: the RDP accountant and
# the PRV accountant's domain bound both do, so reporting epsilon after every epoch took
# 30 times as long as the epoch itself. The value depends only on (sampling rate, noise
# multiplier, order) and is scaled by the step count afterwards, so it is remembered; the
# numbers Opacus returns are unchanged (tests/train/test_privacy_accounting.py compares them).
if not hasattr(_rdp._compute_rdp, "cache_info"):
    _rdp._compute_rdp = functools.lru_cache(maxsize=1 << 16)(_rdp._compute_rdp)


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


def _spent(engine: PrivacyEngine, delta: float) -> float:
    """The epsilon spent so far, computed with one BLAS thread.

    The PRV accountant's numpy work otherwise wakes OpenBLAS's threads, which keep spinning
    after it returns and took the cores from the next epoch's torch threads (the epoch
    after each accounting ran 2x slower on two cores).
    """
    with _blas().limit(limits=1, user_api="blas"):
        return float(engine.get_epsilon(delta))


def clipping_mode(model: nn.Module) -> str:
    """The faster per-sample clipping for ``model`` as measured: per-sample hooks for a model
    with embeddings (text: ghost clipping's embedding norms cost more than they save,
    benchmarks/bench_text.py), ghost clipping otherwise (benchmarks/bench_dp.py)."""
    embeds = any(isinstance(module, nn.Embedding) for module in model.modules())
    return "hooks" if embeds else "ghost"


def make_private_compatible(model: Any) -> tuple[Any, list[str]]:
    """The model with Opacus's fixes applied (and what was replaced), or InvalidSpec."""
    problems = ModuleValidator.validate(model, strict=False)
    if not problems:
        return model, []
    fixed = ModuleValidator.fix(model)
    remaining = ModuleValidator.validate(fixed, strict=False)
    if remaining:
        reasons = "; ".join(str(p) for p in remaining[:5])
        raise InvalidSpec(f"this model cannot be trained with DP-SGD: {reasons}")
    return fixed, sorted({type(p).__name__ + ": " + str(p).split("\n")[0] for p in problems})


def calibrated_noise(config: PrivacyConfig, *, rows: int, batch_size: int, epochs: int) -> float:
    """The noise multiplier Opacus would calibrate for ``config``'s target epsilon on
    ``rows`` rows (Poisson sampling at the loader's rate), computed once for many models."""
    if config.target_epsilon is None:
        return float(config.noise_multiplier or 0.0)
    return float(
        get_noise_multiplier(
            target_epsilon=config.target_epsilon,
            target_delta=config.delta,
            sample_rate=1 / math.ceil(rows / batch_size),
            epochs=epochs,
            accountant=config.accountant,
        )
    )


class PrivacyHook:
    """Wraps the training objects with Opacus and tracks the privacy budget.

    ``account=False`` skips the per-epoch epsilon (shadow models of a membership audit
    train under an already calibrated noise multiplier; their budget is not reported).
    """

    def __init__(self, config: PrivacyConfig, *, account: bool = True) -> None:
        self.config = config
        self.account = account
        # Opacus asks for secure_mode in production (a config switch here) and its hooks make
        # torch warn on every backward pass; neither is news to the person reading the logs.
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        try:
            self.engine = PrivacyEngine(
                accountant=config.accountant, secure_mode=config.secure_mode
            )
        except ImportError:
            # Opacus's secure mode needs torchcsprng, which has no build for current PyTorch.
            raise InvalidSpec(
                "train.privacy.secure_mode needs the torchcsprng package, which is not "
                "installed (it has no build for this PyTorch); train without secure_mode"
            ) from None
        self.noise_multiplier: float | None = None

    def __call__(self, event: Event, state: TrainState) -> None:
        if event is Event.FIT_START:
            self._wrap(state)
        elif (
            event is Event.EPOCH_START
            and "privacy" in state.extra
            and not self.engine.accountant.history
        ):
            # Resumed: account for the epochs the interrupted attempt already ran.
            self.engine.accountant.history = [tuple(h) for h in state.extra["privacy"]["history"]]
        elif event is Event.EPOCH_END and self.account:
            state.epsilon = _spent(self.engine, self.config.delta)
            state.extra["privacy"] = {
                "history": [list(h) for h in self.engine.accountant.history],
                "noise_multiplier": self.noise_multiplier,
            }
        elif event is Event.FIT_END:
            # The trained module leaves without Opacus's hooks: evaluation's attacks run
            # backward passes that are not training steps.
            cleanup = getattr(state.model, "cleanup", None)
            if callable(cleanup):
                cleanup()

    def _wrap(self, state: TrainState) -> None:
        config = self.config
        mode = config.mode or clipping_mode(state.model)
        common: dict[str, Any] = {
            "module": state.model,
            "optimizer": state.optimizer,
            "data_loader": state.loader,
            "criterion": state.criterion,
            "max_grad_norm": config.max_grad_norm,
            "poisson_sampling": True,
            "grad_sample_mode": mode,
            "noise_generator": None if config.secure_mode else state.generators["noise"],
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Opacus warns about secure_mode being off
            if config.target_epsilon is not None:
                wrapped = self.engine.make_private_with_epsilon(
                    **common,
                    target_epsilon=config.target_epsilon,
                    target_delta=config.delta,
                    epochs=state.config.epochs,
                )
            else:
                wrapped = self.engine.make_private(
                    **common, noise_multiplier=config.noise_multiplier
                )
        if mode == "ghost":
            state.model, state.optimizer, state.criterion, state.loader = wrapped
        else:
            state.model, state.optimizer, state.loader = wrapped
        self.noise_multiplier = float(getattr(state.optimizer, "noise_multiplier", 0.0))
        log.info(
            "DP-SGD (%s): noise multiplier %.4f, clip %.3g",
            mode,
            self.noise_multiplier,
            config.max_grad_norm,
        )
