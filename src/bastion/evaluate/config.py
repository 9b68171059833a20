"""The ``evaluate`` block of a run spec (plain pydantic; no torch import).

Every section is optional; ``fairness: true`` and ``explain: true`` take the defaults.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bastion.jsonschema import at_least_one_field

__all__ = [
    "EVALUATION_KINDS",
    "EvaluateConfig",
    "ExplainConfig",
    "FairnessConfig",
    "MembershipConfig",
    "MemorizationConfig",
    "RobustnessConfig",
]

#: The evaluation kinds, as stored with a model version and named by ``bastion eval``.
EVALUATION_KINDS = ("robustness", "membership", "fairness", "explain", "memorization")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RobustnessConfig(_Strict):
    """Evasion attacks on held-out rows: robust accuracy for each attack and eps."""

    attacks: list[Literal["fgsm", "pgd"]] = Field(
        default_factory=lambda: ["fgsm", "pgd"],  # type: ignore[arg-type]
        min_length=1,
        max_length=2,
        json_schema_extra={"uniqueItems": True},
    )
    eps: list[Annotated[float, Field(gt=0, le=10)]] = Field(
        default_factory=lambda: [0.01, 0.05, 0.1], min_length=1, max_length=20
    )
    norm: Literal["linf", "l2"] = "linf"
    steps: int = Field(default=20, ge=1, le=1000, description="PGD iterations.")
    restarts: int = Field(default=1, ge=1, le=20, description="PGD random restarts.")
    step_size: float | None = Field(
        default=None, gt=0, le=10, description="PGD step; default 2.5 * eps / steps."
    )
    schedule: Literal["constant", "cosine"] = "constant"
    max_rows: int = Field(default=1000, ge=1, le=1_000_000, description="Rows attacked.")

    @field_validator("attacks")
    @classmethod
    def _unique(cls, attacks: list[str]) -> list[str]:
        if len(set(attacks)) != len(attacks):
            raise ValueError("an attack is listed twice")
        return attacks


class MembershipConfig(_Strict):
    """Membership inference: the loss-threshold attack, and LiRA with shadow models."""

    attack: Literal["loss", "lira"] = "lira"
    shadow_models: int = Field(default=16, ge=2, le=256)
    max_rows: int = Field(default=4000, ge=10, le=1_000_000, description="Rows scored.")


class FairnessConfig(_Strict):
    """Per-group metrics for each of the run's sensitive features."""

    min_group_size: int = Field(default=10, ge=1, description="Smaller groups are pooled.")


class ExplainConfig(_Strict):
    """Global permutation importance and Integrated Gradients on a sample of rows."""

    rows: int = Field(default=64, ge=1, le=10_000, description="Rows attributed.")
    repeats: int = Field(default=5, ge=1, le=100, description="Permutation repeats.")
    steps: int = Field(default=32, ge=2, le=1000, description="Integrated Gradients steps.")


class MemorizationConfig(_Strict):
    """A language model's canary audit (secret sharer): canaries written into the training
    rows before training (one per entry, into that many rows), ranked after it among
    ``candidates`` random secrets."""

    canaries: list[Annotated[int, Field(ge=1, le=10_000)]] = Field(
        default_factory=lambda: [1, 10, 50], min_length=1, max_length=20
    )
    candidates: int = Field(default=2000, ge=100, le=100_000)
    #: Texts sampled from the model and searched for the training rows' identifiers (0: none).
    samples: int = Field(default=200, ge=0, le=100_000)


def _flag(value: Any) -> Any:
    """``true`` means the defaults; ``false`` means off."""
    if value is True:
        return {}
    if value is False:
        return None
    return value


class EvaluateConfig(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=at_least_one_field)

    robustness: RobustnessConfig | None = None
    membership_inference: MembershipConfig | None = None
    fairness: FairnessConfig | None = None
    explain: ExplainConfig | None = None
    memorization: MemorizationConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _flags(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: _flag(value) for key, value in data.items()}
        return data

    @model_validator(mode="after")
    def _something(self) -> EvaluateConfig:
        if not self.kinds:
            raise ValueError("the evaluate block asks for nothing; name at least one section")
        return self

    @property
    def kinds(self) -> list[str]:
        """The kinds this block asks for, in the order they run."""
        asked = {
            "robustness": self.robustness,
            "membership": self.membership_inference,
            "fairness": self.fairness,
            "explain": self.explain,
            "memorization": self.memorization,
        }
        return [kind for kind in EVALUATION_KINDS if asked[kind] is not None]
