"""Clusters, runs, datasets, models, approvals, policies and audit events (metadata only)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from bastion.evaluate.config import EvaluateConfig
from bastion.governance.policy import Policy as PolicyDocument
from bastion.server.schemas.common import Name, Request, Response, Text

Pem = Annotated[str, StringConstraints(max_length=8000)]
Stage = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
RunStatus = Literal["queued", "leased", "running", "succeeded", "failed", "cancelled"]
JsonObject = Annotated[dict[str, Any], Field(max_length=200)]


class ClusterIn(Request):
    name: Name
    description: Text = ""
    join_token_hours: int = Field(default=24, ge=1, le=720)


class ClusterOut(Response):
    id: str
    name: str
    description: str
    signing_public_key: str | None
    last_heartbeat: dt.datetime | None
    created_at: dt.datetime


class NewClusterOut(ClusterOut):
    join_token: str = Field(description="Shown once; hand it to the cluster's agent.")


RunId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]


class HeartbeatIn(Request):
    runs: Annotated[dict[RunId, Annotated[int, Field(ge=1)]], Field(max_length=1000)] = Field(
        default_factory=dict, description="The runs this agent is executing, with their attempt."
    )
    stopping: bool = Field(
        default=False, description="The agent is shutting down: record it as disconnected."
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


class RunOut(Response):
    id: str
    name: str
    status: str
    status_reason: str
    attempt: int
    spec: dict[str, Any]
    result: dict[str, Any] | None = None
    created_at: dt.datetime
    updated_at: dt.datetime


class LogsIn(Request):
    lines: Annotated[
        list[Annotated[str, StringConstraints(max_length=10000)]],
        Field(min_length=1, max_length=1000),
    ]


class LogLineOut(Response):
    id: int
    attempt: int
    ts: dt.datetime
    line: str


class RunEventIn(Request):
    stage: Stage
    status: RunStatus
    message: Text = ""


class RunEventOut(Response):
    ts: dt.datetime
    stage: str
    status: str
    message: str


class MetricIn(Request):
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_./-]{1,100}$")]
    step: int = Field(ge=0, le=10**9)
    value: float = Field(allow_inf_nan=False)


class MetricOut(Response):
    name: str
    step: int
    value: float
    ts: dt.datetime


class ResultIn(Request):
    result: JsonObject


class ModelIn(Request):
    name: Name


class ModelOut(Response):
    id: str
    name: str
    created_at: dt.datetime


class ExportIn(Request):
    to_cluster: Name


class EvaluateIn(Request):
    evaluate: EvaluateConfig


class EvaluationOut(Response):
    id: str
    kind: str
    run_id: str
    summary: dict[str, Any]
    created_at: dt.datetime


class ImportIn(Request):
    cluster: Name
    source: Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class ModelVersionIn(Request):
    """What the agent reports after sealing a trained model: metadata, never weights."""

    run_id: RunId
    manifest_hash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    signature: Annotated[str, StringConstraints(max_length=20000)]
    evidence: JsonObject = Field(default_factory=dict)


class ModelVersionOut(Response):
    id: str
    version: int
    stage: str
    evidence: dict[str, Any]
    flags: dict[str, Any] = Field(default_factory=dict)
    run_id: str | None = None
    manifest_hash: str | None = None
    created_at: dt.datetime


class PromoteIn(Request):
    to: Literal["staging", "production"] = "production"
    policy: Name | None = Field(default=None, description="Default: the policy named as `to`.")


class CommentIn(Request):
    comment: Text = ""


class RollbackIn(Request):
    to_version: int = Field(ge=1, le=10**9)
    reason: Text = ""


class StageTransitionOut(Response):
    version: int
    from_stage: str
    to_stage: str
    actor_id: str
    reason: str
    approval_id: str | None
    created_at: dt.datetime


class DecisionIn(Request):
    decision: Literal["approved", "rejected"]
    comment: Text = ""


class ApprovalOut(Response):
    id: str
    model_version_id: str
    target_stage: str
    status: str
    policy: str
    required_approvals: int
    gate_results: list[dict[str, Any]]
    requested_by: str
    comment: str
    created_at: dt.datetime
    decided_at: dt.datetime | None


class PolicyIn(Request):
    document: PolicyDocument


class PolicyOut(Response):
    name: str
    document: dict[str, Any]
    updated_at: dt.datetime


class AlertOut(Response):
    id: str
    kind: str
    actor: str
    project: str | None
    details: dict[str, Any]
    created_at: dt.datetime
    acknowledged_by: str | None
    acknowledged_at: dt.datetime | None


class AuditEventOut(Response):
    seq: int
    ts: str
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    hash: str


class AuditVerifyOut(Response):
    events: int
    head_seq: int
    head_hash: str
    checkpoints: int
    last_checkpoint_seq: int
    #: The last event a signature covers (a checkpoint event covers itself).
    signed_through_seq: int
    #: Events after ``signed_through_seq``, and when the oldest of them was written.
    unsigned_events: int
    unsigned_since: str | None
    #: A sentence on the unsigned tail for people, None when every event is signed.
    unsigned: str | None
