"""The federated run's part of the run spec (DESIGN §6c): the job submitted on the aggregator's
cluster, and the site jobs the control plane queues with it. :mod:`bastion.spec` holds them
in its job union; they live here to keep the federated vocabulary in one place."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from bastion.federated.plan import SitePrivacy
from bastion.patterns import DATASET_REF_PATTERN, NAME_PATTERN
from bastion.train.config import BuiltinModel, TrainConfig

__all__ = ["FederatedJob", "FederatedSiteJob"]

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
DatasetRef = Annotated[str, StringConstraints(pattern=DATASET_REF_PATTERN)]
ColumnName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Text = Annotated[str, StringConstraints(max_length=2000)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FederatedJob(_Strict):
    """Train one model on several clusters' data without moving it (DESIGN §6c): this run
    is the aggregator (Flower's SuperLink and ServerApp on ``aggregator``); the control plane
    queues one ``federated-site`` run per cluster, each training on its own ``datasets``
    entry and dialling out to the aggregator."""

    type: Literal["federated"]
    clusters: list[Name] = Field(min_length=2, max_length=32)
    aggregator: Name
    datasets: dict[Name, DatasetRef] = Field(
        description="One dataset version per cluster, living on that cluster (same columns)."
    )
    model_name: Name = Field(description="The registered model the aggregate joins.")
    target: ColumnName | None = Field(default=None, description="Default: the versions'.")
    features: list[ColumnName] | None = Field(default=None, max_length=10_000)
    sensitive_features: list[ColumnName] = Field(default_factory=list, max_length=50)
    model: BuiltinModel
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(epochs=1),
        description="Each site's local training in each round (epochs, batch_size, lr; "
        "privacy adds sample-level DP-SGD at the site).",
    )
    rounds: int = Field(default=3, ge=1, le=1000)
    strategy: Literal["fedavg", "fedprox"] = "fedavg"
    proximal_mu: float = Field(
        default=0.1, ge=0, le=100, description="FedProx's proximal term (strategy fedprox)."
    )
    min_clients: int | None = Field(
        default=None, ge=2, description="Sites a round needs to count (default: all)."
    )
    secure_aggregation: bool = True
    privacy: SitePrivacy | None = Field(
        default=None, description="Site-level DP: each site's update clipped, noise added once."
    )
    host: Annotated[str, StringConstraints(min_length=1, max_length=255)] = Field(
        default="127.0.0.1", description="Where the aggregator listens (its one port)."
    )
    port: int = Field(default=9092, ge=1, le=65535)
    round_timeout: float = Field(default=600.0, gt=0, le=86_400)
    purpose: Text = ""

    @model_validator(mode="after")
    def _sites(self) -> FederatedJob:
        if len(set(self.clusters)) != len(self.clusters):
            raise ValueError("clusters: a cluster is named twice")
        if self.aggregator not in self.clusters:
            raise ValueError(f"aggregator {self.aggregator!r} is not one of the clusters")
        missing = [c for c in self.clusters if c not in self.datasets]
        if missing:
            raise ValueError(f"datasets: no dataset for cluster(s) {', '.join(missing)}")
        extra = sorted(set(self.datasets) - set(self.clusters))
        if extra:
            raise ValueError(f"datasets: {', '.join(extra)} is not one of the clusters")
        if self.secure_aggregation and len(self.clusters) < 3:
            raise ValueError(
                "secure_aggregation needs at least 3 clusters (Flower's SecAgg+ shares each "
                "site's secrets among the others); add a site or set secure_aggregation: false"
            )
        if self.min_clients is not None and self.min_clients > len(self.clusters):
            raise ValueError(
                f"min_clients {self.min_clients} exceeds the {len(self.clusters)} clusters"
            )
        if self.train.holdout == 0:
            raise ValueError("each site evaluates on held-out rows; set train.holdout above 0")
        if self.train.adversarial is not None:
            raise ValueError("train.adversarial: not available at federated sites yet")
        return self


class FederatedSiteJob(_Strict):
    """One site of a federated run (queued by the control plane with the federated run)."""

    type: Literal["federated-site"]
    run: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")] = Field(
        description="The federated run (the aggregator's)."
    )
    site: Name
    dataset: DatasetRef
