"""What the dashboard pages show, read from the control-plane database.

Each function returns plain mappings for one page; nothing here writes.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.server.db.models import (
    Alert,
    Approval,
    Cluster,
    Dataset,
    DatasetVersion,
    Deployment,
    Model,
    ModelVersion,
    Project,
    Run,
    RunEvent,
    RunLog,
    RunMetric,
    User,
)
from bastion.server.services import agents, lineage
from bastion.server.services import datasets as dataset_service
from bastion.server.services import runs as run_service
from bastion.server.web.charts import line_chart

__all__ = [
    "FINAL_STATUSES",
    "dataset_page",
    "datasets_page",
    "model_page",
    "models_page",
    "overview",
    "run_live",
    "runs",
]

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
LOG_TAIL = 200


def _usernames(session: Session, ids: set[str]) -> dict[str, str]:
    if not ids:
        return {}
    rows = session.execute(select(User.id, User.username).where(User.id.in_(ids)))
    return {row.id: row.username for row in rows}


def _job_type(spec: dict[str, Any] | None) -> str:
    job = (spec or {}).get("job")
    return str(job.get("type", "")) if isinstance(job, dict) else ""


def runs(session: Session, *, project: Project, limit: int) -> list[dict[str, Any]]:
    """The newest runs with their status and the stage they last reported."""
    last = (
        select(RunEvent.run_id, func.max(RunEvent.id).label("last"))
        .group_by(RunEvent.run_id)
        .subquery()
    )
    rows = session.execute(
        select(Run, RunEvent.stage, Cluster.name)
        .outerjoin(last, last.c.run_id == Run.id)
        .outerjoin(RunEvent, RunEvent.id == last.c.last)
        .outerjoin(Cluster, Cluster.id == Run.cluster_id)
        .where(Run.project_id == project.id)
        .order_by(Run.created_at.desc())
        .limit(limit)
    ).all()
    return [
        {
            "id": run.id,
            "name": run.name,
            "job": _job_type(run.spec),
            "status": run.status,
            "stage": stage or "",
            "cluster": cluster or "",
            "attempt": run.attempt,
            "created_at": run.created_at,
            "updated_at": run.updated_at,
        }
        for run, stage, cluster in rows
    ]


def _pending_approvals(session: Session, project: Project) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Approval, Model.name, ModelVersion.version)
        .join(ModelVersion, ModelVersion.id == Approval.model_version_id)
        .join(Model, Model.id == ModelVersion.model_id)
        .where(Approval.project_id == project.id, Approval.status == "pending")
        .order_by(Approval.created_at)
    ).all()
    names = _usernames(session, {a.requested_by for a, _, _ in rows})
    return [
        {
            "model": name,
            "version": version,
            "target": approval.target_stage,
            "requested_by": names.get(approval.requested_by, ""),
            "created_at": approval.created_at,
        }
        for approval, name, version in rows
    ]


def overview(session: Session, *, project: Project, clusters: bool, alerts: bool) -> dict[str, Any]:
    """Clusters and their heartbeat, recent runs, production models, approvals, alerts."""
    found: dict[str, Any] = {
        "runs": runs(session, project=project, limit=10),
        "approvals": _pending_approvals(session, project),
        "production": [
            {"model": name, "version": version, "created_at": created}
            for name, version, created in session.execute(
                select(Model.name, ModelVersion.version, ModelVersion.created_at)
                .join(ModelVersion, ModelVersion.model_id == Model.id)
                .where(Model.project_id == project.id, ModelVersion.stage == "production")
                .order_by(Model.name)
            )
        ],
        "deployments": [
            {
                "name": d.name,
                "model": f"{d.model_name}@{d.model_version}",
                "status": "stopped" if d.stopped_at else "serving",
            }
            for d in session.scalars(
                select(Deployment)
                .where(Deployment.project_id == project.id)
                .order_by(Deployment.name)
            )
        ],
        "clusters": None,
        "alerts": None,
    }
    if clusters:
        found["clusters"] = [
            {
                "name": c.name,
                "last_heartbeat": c.last_heartbeat,
                "live": agents.agent_is_live(c),
                "joined": c.signing_public_key is not None,
            }
            for c in session.scalars(select(Cluster).order_by(Cluster.name))
        ]
    if alerts:
        found["alerts"] = [
            {
                "id": a.id,
                "kind": a.kind,
                "actor": a.actor,
                "created_at": a.created_at,
                "details": a.details,
            }
            for a in session.scalars(
                select(Alert)
                .where(Alert.acknowledged_at.is_(None))
                .where((Alert.project == project.name) | Alert.project.is_(None))
                .order_by(Alert.created_at.desc())
                .limit(20)
            )
        ]
    return found


def run_live(session: Session, *, project: Project, run_id: str) -> dict[str, Any]:
    """A run with its stages, the tail of its log and its metric charts."""
    run = run_service.get_run(session, project=project, run_id=run_id)
    events = list(
        session.scalars(select(RunEvent).where(RunEvent.run_id == run.id).order_by(RunEvent.id))
    )
    tail = list(
        session.scalars(
            select(RunLog).where(RunLog.run_id == run.id).order_by(RunLog.id.desc()).limit(LOG_TAIL)
        )
    )
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for metric in session.scalars(
        select(RunMetric).where(RunMetric.run_id == run.id).order_by(RunMetric.step, RunMetric.id)
    ):
        series[metric.name].append((metric.step, metric.value))
    return {
        "run": {
            "id": run.id,
            "name": run.name,
            "status": run.status,
            "reason": run.status_reason,
            "attempt": run.attempt,
            "created_at": run.created_at,
            "updated_at": run.updated_at,
            "result": run.result,
        },
        "final": run.status in FINAL_STATUSES,
        "stages": [
            {"ts": e.ts, "stage": e.stage, "status": e.status, "message": e.message} for e in events
        ],
        "log": [line.line for line in reversed(tail)],
        "charts": [line_chart(name, points) for name, points in sorted(series.items())],
        "spec": run.spec,
    }


def datasets_page(session: Session, *, project: Project) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Dataset.name, func.max(DatasetVersion.version), func.count(DatasetVersion.id))
        .outerjoin(DatasetVersion, DatasetVersion.dataset_id == Dataset.id)
        .where(Dataset.project_id == project.id)
        .group_by(Dataset.name)
        .order_by(Dataset.name)
    ).all()
    return [{"name": name, "latest": latest, "versions": count} for name, latest, count in rows]


def dataset_page(session: Session, *, project: Project, name: str) -> list[dict[str, Any]]:
    """Every version (newest first) with its schema, scans, signature and lineage."""
    dataset = dataset_service.get_dataset(session, project=project, name=name)
    rows = list(
        session.scalars(
            select(DatasetVersion)
            .where(DatasetVersion.dataset_id == dataset.id)
            .order_by(DatasetVersion.version.desc())
        )
    )
    used = lineage.downstream(
        session, project=project, roots=[f"dataset:{name}@{row.version}" for row in rows]
    )
    versions = []
    for row in rows:
        view = dataset_service.version_view(session, row)
        view["used_by"] = used[f"dataset:{name}@{row.version}"]
        versions.append(view)
    return versions


def models_page(session: Session, *, project: Project) -> list[dict[str, Any]]:
    """Each model with its versions, newest first (one query)."""
    listed: dict[str, list[dict[str, Any]]] = {}
    for name, row in session.execute(
        select(Model.name, ModelVersion)
        .outerjoin(ModelVersion, ModelVersion.model_id == Model.id)
        .where(Model.project_id == project.id)
        .order_by(Model.name, ModelVersion.version.desc())
    ):
        versions = listed.setdefault(name, [])
        if row is not None:
            versions.append(_version_row(row))
    return [{"name": name, "versions": versions} for name, versions in listed.items()]


def _version_row(row: ModelVersion) -> dict[str, Any]:
    evidence = row.evidence or {}
    return {
        "version": row.version,
        "stage": row.stage,
        "epsilon": evidence.get("epsilon"),
        "test_accuracy": evidence.get("test_accuracy"),
        "signed": bool(row.signature),
        "created_at": row.created_at,
        "flags": row.flags or {},
    }


def model_page(session: Session, *, row: ModelVersion) -> dict[str, Any]:
    """A version's approvals (newest first) with their gate results, and its creator."""
    approvals = list(
        session.scalars(
            select(Approval)
            .where(Approval.model_version_id == row.id)
            .order_by(Approval.created_at.desc())
        )
    )
    names = _usernames(
        session,
        {row.created_by}
        | {a.requested_by for a in approvals}
        | {a.decided_by for a in approvals if a.decided_by},
    )
    return {
        "version": _version_row(row),
        "created_by": names.get(row.created_by, ""),
        "approvals": [
            {
                "status": a.status,
                "target": a.target_stage,
                "policy": a.policy,
                "requested_by": names.get(a.requested_by, ""),
                "decided_by": names.get(a.decided_by or "", ""),
                "comment": a.comment,
                "gates": a.gate_results,
                "created_at": a.created_at,
            }
            for a in approvals
        ],
        "pending": any(a.status == "pending" for a in approvals),
    }
