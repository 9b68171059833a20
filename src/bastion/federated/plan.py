"""What every process of one federated training agrees on: the plan, carried in the run config.

The aggregator writes it into the Flower App's ``pyproject.toml``; the ServerApp and each
site's ClientApp read it back from ``context.run_config``. It holds the model, the local
training recipe and the federation's shape, never data or weights.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "HISTORY",
    "PLAN_KEY",
    "PROGRESS",
    "STATS",
    "WEIGHTS",
    "FederatedPlan",
    "SitePrivacy",
    "read_plan",
    "site_epsilon",
]

#: The run-config key that holds the plan (as JSON).
PLAN_KEY = "bastion-plan"
#: What the aggregator writes to the plan's ``output`` folder.
WEIGHTS = "weights.safetensors"
HISTORY = "history.json"
#: One JSON line per finished round (its number, the sites that answered, their figures).
PROGRESS = "progress.jsonl"
#: What a statistics run writes instead: the sites' scaled feature moments, averaged.
STATS = "stats.json"


class SitePrivacy(BaseModel):
    """Site-level differential privacy: each site's update is clipped to ``clipping_norm``
    (at the site, before SecAgg+ masks it) and the aggregator adds Gaussian noise of standard
    deviation ``noise_multiplier * clipping_norm / sites`` to the average once a round; the
    run's epsilon at ``delta`` is accounted over its rounds (RDP, every site every round)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    noise_multiplier: float = Field(gt=0, le=100)
    clipping_norm: float = Field(gt=0, le=1e6)
    delta: float = Field(default=1e-5, gt=0, lt=1)


class FederatedPlan(BaseModel):
    """One Flower run: a ``train`` run (``rounds`` of local training and averaging, each
    followed by every site evaluating the average on its held-out rows) or the ``stats`` run
    before it, in which each site answers with the mean and mean square of its numeric
    features scaled by ``bounds`` (the published schemas' ranges), so that the averaged
    answer (under SecAgg+ like any update) gives the federation's means and deviations."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: Literal["stats", "train"] = "train"
    #: Stats run: each numeric feature's published range, ``(low, high)``.
    bounds: dict[str, tuple[float, float]] = Field(default_factory=dict)
    #: How every site turns its rows into inputs (a :class:`~bastion.train.data.Preprocessing`
    #: as JSON); None when the site's data file already holds tensors.
    preprocessing: dict[str, Any] | None = None
    #: Share of each site's rows held out for its evaluation (drawn under ``seed``).
    holdout: float = Field(default=0.2, ge=0, le=0.5)
    #: Columns each site measures fairness across on its held-out rows (table data only).
    sensitive_features: list[str] = Field(default_factory=list, max_length=50)

    #: The model, as a training spec gives it (``{"builtin": "mlp", ...}``).
    model: dict[str, Any]
    #: Each site's local training per round (a ``train`` block: epochs, batch_size, lr, ...).
    train: dict[str, Any]
    input_shape: tuple[int, ...]
    classes: int = Field(ge=2)
    sites: int = Field(ge=2)
    rounds: int = Field(ge=1, le=1000)
    min_clients: int = Field(ge=2)
    strategy: Literal["fedavg", "fedprox"] = "fedavg"
    #: FedProx: each site's local loss adds ``proximal_mu / 2 * ||w - w_global||^2``.
    proximal_mu: float = Field(default=0.0, ge=0)
    secure_aggregation: bool = True
    #: The most rows one site trains on (SecAgg+'s ``max_weight``: no site's weight exceeds it).
    max_rows: int = Field(ge=1)
    seed: int = 0
    privacy: SitePrivacy | None = None
    #: Seconds the aggregator waits for the sites' replies at each step of a round.
    round_timeout: float = Field(default=600.0, gt=0)
    #: Where the ServerApp writes the final weights and the history (the aggregator's folder).
    output: str

    @model_validator(mode="after")
    def _enough_sites(self) -> FederatedPlan:
        if self.min_clients > self.sites:
            raise ValueError(f"min_clients {self.min_clients} exceeds the {self.sites} sites")
        if self.secure_aggregation and self.sites < 3:
            raise ValueError("secure_aggregation needs at least 3 sites (Flower's SecAgg+)")
        return self


def read_plan(run_config: dict[str, Any]) -> FederatedPlan:
    """The plan in a Flower run config."""
    return FederatedPlan.model_validate(json.loads(str(run_config[PLAN_KEY])))


def site_epsilon(privacy: SitePrivacy, rounds: int) -> float:
    """The epsilon (at ``privacy.delta``) of ``rounds`` rounds of the Gaussian mechanism with
    every site taking part (sample rate 1): Opacus's RDP accountant."""
    from opacus.accountants import RDPAccountant  # noqa: PLC0415 - Opacus on demand

    accountant = RDPAccountant()
    accountant.history.append((privacy.noise_multiplier, 1.0, rounds))
    return float(accountant.get_epsilon(privacy.delta))
