"""The ``model`` and ``train`` blocks of a run spec (plain pydantic; no torch import)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

__all__ = [
    "AdversarialConfig",
    "BuiltinModel",
    "EntrypointModel",
    "ModelSpec",
    "PrivacyConfig",
    "TrainConfig",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BuiltinModel(_Strict):
    builtin: Literal["logreg", "mlp", "cnn"]
    hidden: list[Annotated[int, Field(ge=1, le=65536)]] = Field(
        default_factory=lambda: [128, 64], max_length=8, description="MLP layer widths."
    )
    channels: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        default_factory=lambda: [16, 32], min_length=1, max_length=4, description="CNN widths."
    )
    #: tanh often trains better than relu under DP-SGD (bounded activations, smaller gradients).
    activation: Literal["relu", "tanh"] = "relu"


class EntrypointModel(_Strict):
    entrypoint: Annotated[
        str, StringConstraints(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", max_length=200)
    ]


ModelSpec = BuiltinModel | EntrypointModel


class PrivacyConfig(_Strict):
    """DP-SGD through Opacus: a target epsilon (noise calibrated to it) or a noise multiplier."""

    target_epsilon: float | None = Field(default=None, gt=0, le=100)
    noise_multiplier: float | None = Field(default=None, gt=0, le=100)
    delta: float = Field(default=1e-5, gt=0, lt=1)
    max_grad_norm: float = Field(default=1.0, gt=0, le=1000)
    accountant: Literal["prv", "rdp"] = "prv"
    #: "ghost" clipping (fast) or per-sample "hooks"; benchmarks/bench_dp.py measures both.
    mode: Literal["ghost", "hooks", "functorch", "ew"] = "ghost"
    #: Cryptographically secure noise and sampling (production); runs are then not repeatable.
    secure_mode: bool = False

    @model_validator(mode="after")
    def _one_budget(self) -> PrivacyConfig:
        if (self.target_epsilon is None) == (self.noise_multiplier is None):
            raise ValueError("give exactly one of target_epsilon and noise_multiplier")
        return self


class AdversarialConfig(_Strict):
    """Madry-style adversarial training: a share of each batch replaced by attacked copies."""

    attack: Literal["pgd", "fgsm"] = "pgd"
    eps: float = Field(gt=0, le=10)
    steps: int = Field(default=7, ge=1, le=100)
    norm: Literal["linf", "l2"] = "linf"
    ratio: float = Field(default=0.5, gt=0, le=1, description="Share of each batch attacked.")


class TrainConfig(_Strict):
    epochs: int = Field(default=10, ge=1, le=10_000)
    batch_size: int = Field(default=64, ge=1, le=1 << 20)
    lr: float = Field(default=0.05, gt=0, le=10)
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(default=0.9, ge=0, lt=1)
    seed: int = Field(default=0, ge=0)
    checkpoint_every: int = Field(default=1, ge=1, description="Epochs between checkpoints.")
    #: Share of the rows held out of training (stratified, drawn under ``seed``): the
    #: evaluate stage measures accuracy, attacks and audits on them.
    holdout: float = Field(default=0.2, ge=0, le=0.5)
    privacy: PrivacyConfig | None = None
    adversarial: AdversarialConfig | None = None
    #: Identifier columns the run may use as features anyway (each override is audited).
    allow_identifier_features: list[str] = Field(default_factory=list, max_length=100)
    #: Forward passes under ``torch.autocast``: bf16 (GPU or CPU) or fp16 (GPU only, with a
    #: gradient scaler; not with DP-SGD, whose per-sample clipping would see scaled gradients).
    mixed_precision: Literal["bf16", "fp16"] | None = None

    @model_validator(mode="after")
    def _fp16_without_privacy(self) -> TrainConfig:
        if self.mixed_precision == "fp16" and self.privacy is not None:
            raise ValueError(
                "mixed_precision fp16 needs a gradient scaler, which DP-SGD's per-sample "
                "clipping cannot use; use bf16 with privacy"
            )
        return self
