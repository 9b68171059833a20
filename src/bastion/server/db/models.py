"""ORM models of the control plane: metadata only, never raw rows, weights or keys.

They share :data:`bastion.db.metadata` with the audit table, so one Alembic
history covers the whole control-plane database.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from bastion.db import metadata

__all__ = [
    "ApiToken",
    "Approval",
    "Base",
    "Cluster",
    "ClusterJoinToken",
    "Dataset",
    "DatasetVersion",
    "Deployment",
    "IdempotencyKey",
    "Membership",
    "Model",
    "ModelVersion",
    "Policy",
    "Project",
    "Run",
    "RunEvent",
    "RunLog",
    "RunMetric",
    "ServingKey",
    "User",
    "new_id",
    "utcnow",
]


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timestamps are stored and returned in UTC, always timezone-aware.

    SQLite keeps no offset, so values read back are tagged UTC here.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime; use timezone-aware UTC timestamps")
        return value.astimezone(dt.UTC) if value is not None else None

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    metadata = metadata
    type_annotation_map: ClassVar[dict[Any, Any]] = {dt.datetime: UTCDateTime}


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="human")  # human | agent | job | serving
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)

    user: Mapped[User] = relationship(lazy="joined")


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("project_id", "user_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    user: Mapped[User] = relationship(lazy="joined")


class Cluster(Base):
    __tablename__ = "clusters"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    signing_public_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    hybrid_public_keyset: Mapped[str | None] = mapped_column(Text, nullable=True)
    agent_user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    last_heartbeat: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    #: How its agent isolates jobs, as the agent last said: ``bubblewrap`` or ``none``.
    isolation: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: What its agent's host advertises (``api.clusters.Capacity``: CPUs, memory, GPUs), as
    #: the agent last said; null until it did. Placement compares runs' resources with it.
    capacity: Mapped[dict[str, object] | None] = mapped_column(JSON, nullable=True)


class ClusterJoinToken(Base):
    __tablename__ = "cluster_join_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"))
    secret_hash: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[dt.datetime] = mapped_column()
    used_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    cluster_id: Mapped[str | None] = mapped_column(ForeignKey("clusters.id"), nullable=True)
    name: Mapped[str] = mapped_column(String(100))
    spec: Mapped[dict[str, object]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    status_reason: Mapped[str] = mapped_column(Text, default="")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_retries: Mapped[int] = mapped_column(Integer, default=0)
    leased_by: Mapped[str | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    created_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    #: What the job reported as its outcome (aggregate summaries only).
    result: Mapped[dict[str, object] | None] = mapped_column(JSON, nullable=True)
    #: How its attempts ran: ``bubblewrap``, or ``none`` once any attempt ran unsandboxed.
    isolation: Mapped[str | None] = mapped_column(String(16), nullable=True)


class RunEvent(Base):
    __tablename__ = "run_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    ts: Mapped[dt.datetime] = mapped_column(default=utcnow)
    stage: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")


class FederationMember(Base):
    """What one participant of a federated run told the others through the control plane:
    the aggregator its address and CA certificate, a site its SuperNode's public key, and
    later where each one stands. Public material only: no weight, no row, no private key."""

    __tablename__ = "federation_members"
    __table_args__ = (UniqueConstraint("run_id", "member"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: The federated run (the aggregator's).
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    #: ``aggregator`` or the site's cluster name.
    member: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, object]] = mapped_column(JSON)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class RunLog(Base):
    __tablename__ = "run_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    ts: Mapped[dt.datetime] = mapped_column(default=utcnow)
    line: Mapped[str] = mapped_column(Text)


class RunMetric(Base):
    __tablename__ = "run_metrics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    step: Mapped[int] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)
    ts: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class DatasetVersion(Base):
    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    schema_: Mapped[dict[str, object]] = mapped_column("schema", JSON)
    row_count: Mapped[int] = mapped_column(Integer)
    manifest_hash: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(Text, default="")
    summaries: Mapped[dict[str, object]] = mapped_column(JSON)
    purpose: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # Where the data lives and how it came to be (the run that sealed it).
    cluster_id: Mapped[str | None] = mapped_column(ForeignKey("clusters.id"), nullable=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"), nullable=True)
    parent_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    target: Mapped[str | None] = mapped_column(String(200), nullable=True)
    subject_id_column: Mapped[str | None] = mapped_column(String(200), nullable=True)
    schema_edited_by: Mapped[str | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    # GDPR erasure: when its data keys were destroyed, and why they must be kept meanwhile.
    shredded_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    retention_hold: Mapped[str] = mapped_column(Text, default="")


class Model(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"), nullable=True)
    stage: Mapped[str] = mapped_column(String(16), default="none")
    evidence: Mapped[dict[str, object]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # The sealed model directory in the compute plane that made it.
    manifest_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    signature: Mapped[str] = mapped_column(Text, default="")
    cluster_id: Mapped[str | None] = mapped_column(ForeignKey("clusters.id"), nullable=True)
    # Notices about the version, e.g. "trained_on_erased_data" with a retrain recommendation.
    flags: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)


class CodePackage(Base):
    """Users' code, by name in a project (``bastion code push``); its versions follow."""

    __tablename__ = "code_packages"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class CodeVersion(Base):
    """One pushed version: its file list and hashes, never its text.

    ``sealed_archive`` is the archive sealed to the cluster's HPKE key by the pusher's CLI
    (the control plane cannot open it); the cluster's agent opens, checks and seals it, then
    records ``manifest_hash`` and ``signature``: the version is registered."""

    __tablename__ = "code_versions"
    __table_args__ = (UniqueConstraint("package_id", "version"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    package_id: Mapped[str] = mapped_column(ForeignKey("code_packages.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id"))
    files: Mapped[list[dict[str, object]]] = mapped_column(JSON)
    archive_sha256: Mapped[str] = mapped_column(String(64))
    sealed_archive: Mapped[str | None] = mapped_column(Text, nullable=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"), nullable=True)
    manifest_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    signature: Mapped[str] = mapped_column(Text, default="")
    pushed_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class CodeReview(Base):
    """A reviewer's verdict on a code version (never the person who pushed it)."""

    __tablename__ = "code_reviews"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    code_version_id: Mapped[str] = mapped_column(
        ForeignKey("code_versions.id", ondelete="CASCADE"), index=True
    )
    reviewer_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    verdict: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Evaluation(Base):
    """One evaluation of a model version (robustness, membership, fairness, explain,
    memorization).

    Append-only: a later evaluation of the same kind adds a row; the newest is current.
    The summary holds aggregates only (no row leaves the compute plane).
    """

    __tablename__ = "evaluations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    model_version_id: Mapped[str] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), index=True
    )
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    kind: Mapped[str] = mapped_column(String(16))
    summary: Mapped[dict[str, object]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Approval(Base):
    __tablename__ = "approvals"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    model_version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"))
    target_stage: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    requested_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    decided_by: Mapped[str | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    # The promotion's policy, its gate results and how many distinct approvers it needs.
    policy: Mapped[str] = mapped_column(String(64), default="")
    required_approvals: Mapped[int] = mapped_column(Integer, default=1)
    gate_results: Mapped[list[dict[str, object]]] = mapped_column(JSON, default=list)


class ApprovalDecision(Base):
    """One reviewer's decision on a promotion (N distinct approvers when the policy says so)."""

    __tablename__ = "approval_decisions"
    __table_args__ = (UniqueConstraint("approval_id", "user_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    approval_id: Mapped[str] = mapped_column(
        ForeignKey("approvals.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    decision: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class StageTransition(Base):
    """A model version's stage change: the promotion history, never overwritten."""

    __tablename__ = "stage_transitions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    model_version_id: Mapped[str] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), index=True
    )
    from_stage: Mapped[str] = mapped_column(String(16))
    to_stage: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    reason: Mapped[str] = mapped_column(Text, default="")
    approval_id: Mapped[str | None] = mapped_column(ForeignKey("approvals.id"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Policy(Base):
    __tablename__ = "policies"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    document: Mapped[dict[str, object]] = mapped_column(JSON)
    updated_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Alert(Base):
    """An insider-threat signal: unusual behaviour of one identity, stored and audited."""

    __tablename__ = "alerts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    actor: Mapped[str] = mapped_column(String(200), index=True)
    project: Mapped[str | None] = mapped_column(String(64), nullable=True)
    details: Mapped[dict[str, object]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    acknowledged_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class AccessDenial(Base):
    """A refused request (403), kept a day to spot repeated denials."""

    __tablename__ = "access_denials"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    actor: Mapped[str] = mapped_column(String(200), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class ErasureRequest(Base):
    """A data subject's erasure request (GDPR Art. 17); the subject only as a keyed pseudonym."""

    __tablename__ = "erasure_requests"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    subject_pseudonym: Mapped[str] = mapped_column(String(64), index=True)
    #: "erase" removes the subject; "locate" only finds where it is (subject-level lineage).
    mode: Mapped[str] = mapped_column(String(8), default="erase")
    reason: Mapped[str] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    run_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    results: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Deployment(Base):
    """A model version served by a cluster's agent; each (re)start is a ``serve`` run."""

    __tablename__ = "deployments"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id"))
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[int] = mapped_column(Integer)
    #: Earlier model versions, most recent last (what rollback returns to).
    history: Mapped[list[int]] = mapped_column(JSON, default=list)
    #: The serve job without its model: host, port, TLS files, Redis, serving settings.
    settings: Mapped[dict[str, object]] = mapped_column(JSON)
    #: The first replica's run (one per replica: ``replica_runs``).
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"), nullable=True)
    replica_runs: Mapped[list[str]] = mapped_column(JSON, default=list)
    unapproved: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class ServingKey(Base):
    """A client key of one deployment: ``bsk_<id>_<secret>``, stored as the secret's hash."""

    __tablename__ = "serving_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    deployment_id: Mapped[str] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100), default="")
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    burst: Mapped[int | None] = mapped_column(Integer, nullable=True)
    quota: Mapped[int | None] = mapped_column(Integer, nullable=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    created_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class IdempotencyKey(Base):
    """A write sent with an ``Idempotency-Key``: claimed in the write's own transaction, its
    answer stored once the route returned, replayed to a retry of the same request.

    ``scope`` is a hash of the caller's credential (never the credential); ``request_hash``
    binds the key to one method, path and body.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("scope", "key"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    scope: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    content_type: Mapped[str | None] = mapped_column(String(100), nullable=True)
    body: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
