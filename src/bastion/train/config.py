"""The ``model`` and ``train`` blocks of a run spec (plain pydantic; no torch import)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

__all__ = [
    "AdversarialConfig",
    "BuiltinModel",
    "EntrypointModel",
    "LoraSpec",
    "ModelSpec",
    "PrivacyConfig",
    "TextInput",
    "TrainConfig",
    "text_settings",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BuiltinModel(_Strict):
    builtin: Literal["logreg", "mlp", "cnn", "transformer", "gpt"]
    hidden: list[Annotated[int, Field(ge=1, le=65536)]] = Field(
        default_factory=lambda: [128, 64], max_length=8, description="MLP layer widths."
    )
    channels: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        default_factory=lambda: [16, 32], min_length=1, max_length=4, description="CNN widths."
    )
    #: tanh often trains better than relu under DP-SGD (bounded activations, smaller gradients).
    activation: Literal["relu", "tanh"] = "relu"
    #: The transformer (a text classifier over one ``text`` column) and gpt (a language model
    #: of one): width, blocks and attention heads, the tokenizer's vocabulary (learnt in the
    #: job from the training split) and the tokens kept of each text.
    dim: int = Field(default=64, ge=8, le=1024)
    layers: int = Field(default=2, ge=1, le=12)
    heads: int = Field(default=4, ge=1, le=16)
    vocab_size: int = Field(default=4000, ge=100, le=50_000)
    #: A word joins the vocabulary (which ships with the model) only when at least this
    #: many training rows hold it; rarer words, a patient's surname say, read as unknown.
    vocab_min_rows: int = Field(default=5, ge=1, le=1_000_000)
    max_length: int = Field(default=128, ge=8, le=1024)

    @model_validator(mode="after")
    def _heads_divide_the_width(self) -> BuiltinModel:
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")
        return self


class TextInput(_Strict):
    """How a user's model reads a text column: the tokenizer the job learns from the training
    split (its vocabulary, and how many rows must hold a word) and the tokens kept per text."""

    vocab_size: int = Field(default=4000, ge=100, le=50_000)
    vocab_min_rows: int = Field(default=5, ge=1, le=1_000_000)
    max_length: int = Field(default=128, ge=8, le=1024)


class EntrypointModel(_Strict):
    entrypoint: Annotated[
        str, StringConstraints(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", max_length=200)
    ]
    #: The model reads one text column's token ids (``build`` is given ``vocab_size`` too).
    text: TextInput | None = None


ModelSpec = BuiltinModel | EntrypointModel


def text_settings(model: ModelSpec) -> TextInput | None:
    """The tokenizer settings of a model that reads text (the built-in transformer and gpt,
    or a user's model with ``text``), else None."""
    if isinstance(model, EntrypointModel):
        return model.text
    if model.builtin not in ("transformer", "gpt"):
        return None
    return TextInput(
        vocab_size=model.vocab_size,
        vocab_min_rows=model.vocab_min_rows,
        max_length=model.max_length,
    )


class PrivacyConfig(_Strict):
    """DP-SGD through Opacus: a target epsilon (noise calibrated to it) or a noise multiplier."""

    target_epsilon: float | None = Field(default=None, gt=0, le=100)
    noise_multiplier: float | None = Field(default=None, gt=0, le=100)
    delta: float = Field(default=1e-5, gt=0, lt=1)
    max_grad_norm: float = Field(default=1.0, gt=0, le=1000)
    accountant: Literal["prv", "rdp"] = "prv"
    #: How Opacus bounds each row's gradient: "ghost" clipping or per-sample "hooks" (and two
    #: more). None: the faster for the model as measured, ghost clipping for tables and
    #: images (benchmarks/bench_dp.py), hooks for text models, whose embeddings make ghost
    #: clipping's norms costly (benchmarks/bench_text.py).
    mode: Literal["ghost", "hooks", "functorch", "ew"] | None = None
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


class LoraSpec(_Strict):
    """LoRA (Hugging Face PEFT) for fine-tuning a text model (``init_from``): low-rank
    adapters on the named linear layers of every block train, everything else stays frozen;
    after training the adapters are merged into the weights, so the model keeps its
    architecture. Under DP-SGD only the adapters are clipped and noised."""

    rank: int = Field(default=8, ge=1, le=256)
    alpha: int = Field(default=16, ge=1, le=1024)
    #: Attention's projections by default; ``up`` and ``down`` are each block's MLP.
    targets: list[Literal["qkv", "out", "up", "down"]] = Field(
        default_factory=lambda: ["qkv", "out"],  # type: ignore[arg-type]
        min_length=1,
        max_length=4,
    )


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
    #: Fine-tune a text model through LoRA adapters only (needs ``init_from``).
    lora: LoraSpec | None = None

    @model_validator(mode="after")
    def _fp16_without_privacy(self) -> TrainConfig:
        if self.mixed_precision == "fp16" and self.privacy is not None:
            raise ValueError(
                "mixed_precision fp16 needs a gradient scaler, which DP-SGD's per-sample "
                "clipping cannot use; use bf16 with privacy"
            )
        return self
