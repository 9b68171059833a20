"""Clusters and the agent protocol: join, heartbeat, lease."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from bastion.api.common import (
    Name,
    Pem,
    Request,
    Response,
    RunId,
    Text,
)

__all__ = [
    "Capacity",
    "ClusterIn",
    "ClusterOut",
    "GpuInfo",
    "HeartbeatIn",
    "HeartbeatOut",
    "Isolation",
    "JoinIn",
    "JoinOut",
    "JoinTokenIn",
    "JoinTokenOut",
    "LeaseOut",
    "NewClusterOut",
]


#: How an agent isolates its jobs (:class:`bastion.security.sandbox.Isolation`).
Isolation = Literal["bubblewrap", "none"]


class GpuInfo(Request):
    """One GPU of an agent's host, as ``torch.cuda`` names it."""

    index: int = Field(ge=0, le=1023, description="Its CUDA index on the host.")
    name: Annotated[str, StringConstraints(max_length=200)] = ""
    memory_mb: int = Field(default=0, ge=0, le=1 << 32, description="Total memory, MiB.")


class Capacity(Request):
    """What an agent's host can give a job: what placement compares a run's resources with."""

    cpus: int = Field(ge=1, le=1 << 16)
    memory_mb: int = Field(ge=0, le=1 << 32, description="The host's memory, MiB.")
    gpus: list[GpuInfo] = Field(default_factory=list, max_length=64)


class ClusterIn(Request):
    name: Name
    description: Text = ""
    join_token_hours: int = Field(default=24, ge=1, le=720)


class ClusterOut(Response):
    id: str
    name: str
    description: str
    signing_public_key: str | None
    hybrid_public_keyset: str | None = Field(
        default=None, description="The agent's HPKE public keyset: what code is sealed to."
    )
    last_heartbeat: dt.datetime | None
    created_at: dt.datetime
    isolation: Isolation | None = Field(
        default=None,
        description="How the cluster's agent isolates jobs: bubblewrap, or none (started "
        "with --no-sandbox); null until its agent said.",
    )
    capacity: Capacity | None = Field(
        default=None,
        description="What its agent's host advertises (CPUs, memory, GPUs); null until its "
        "agent said.",
    )


class NewClusterOut(ClusterOut):
    join_token: str = Field(description="Shown once; hand it to the cluster's agent.")


class JoinTokenIn(Request):
    hours: int = Field(default=24, ge=1, le=720, description="How long the token may be used.")


class JoinTokenOut(Response):
    cluster: str
    join_token: str = Field(description="Shown once; hand it to the cluster's agent.")


class HeartbeatIn(Request):
    runs: Annotated[dict[RunId, Annotated[int, Field(ge=1)]], Field(max_length=1000)] = Field(
        default_factory=dict, description="The runs this agent is executing, with their attempt."
    )
    stopping: bool = Field(
        default=False, description="The agent is shutting down: record it as disconnected."
    )
    isolation: Isolation | None = Field(
        default=None, description="How this agent isolates jobs (bubblewrap or none)."
    )
    capacity: Capacity | None = Field(
        default=None, description="What this agent's host can give jobs (placement)."
    )


class HeartbeatOut(Response):
    stop: list[str] = Field(description="Runs the agent must stop: cancelled, lost or fenced off.")
    serve: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="For each serve run: the model version (and its training data) to serve; "
        "when it differs from the one staged, the agent stages it for a hot-swap.",
    )


class JoinIn(Request):
    cluster: Name
    join_token: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    signing_public_key: Pem
    hybrid_public_keyset: Annotated[str, StringConstraints(max_length=20000)]


class JoinOut(Response):
    cluster: str
    token: str = Field(description="The agent's own credential, shown once.")


class LeaseOut(Response):
    run_id: str
    project: str
    attempt: int
    spec: dict[str, Any]
    job_token: str
    lease_seconds: int
    resume_from: int | None
    inputs: dict[str, Any] = Field(
        default_factory=dict, description="Dataset versions the job reads (verified first)."
    )
