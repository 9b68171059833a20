"""What the dashboard pages show, shaped for their templates.

Every read goes through the control plane's services (the same ones the API's routes
call); this module only turns what they return into plain mappings for one page, and
nothing here writes.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy.orm import Session

from bastion.server.db.models import ModelVersion, Project, RunEvent
from bastion.server.services import agents, lineage
from bastion.server.services import alerts as alert_service
from bastion.server.services import clusters as cluster_service
from bastion.server.services import datasets as dataset_service
from bastion.server.services import deployments as deployment_service
from bastion.server.services import governance as governance_service
from bastion.server.services import identity as identity_service
from bastion.server.services import models as model_service
from bastion.server.services import runs as run_service
from bastion.server.web.charts import line_chart

__all__ = [
    "CHECKPOINT_STAGE",
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
#: The stage a job reports each checkpoint under; the run page folds them into one line.
CHECKPOINT_STAGE = "checkpoint"
#: How many checkpoints that line lists when opened (the newest); it counts them all.
CHECKPOINTS_LISTED = 100


def _job_type(spec: dict[str, Any] | None) -> str:
    job = (spec or {}).get("job")
    return str(job.get("type", "")) if isinstance(job, dict) else ""


def runs(session: Session, *, project: Project, limit: int) -> list[dict[str, Any]]:
    """The newest runs with their status and the stage they last reported."""
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
        for run, stage, cluster in run_service.recent_runs(session, project=project, limit=limit)
    ]


def _pending_approvals(session: Session, project: Project) -> list[dict[str, Any]]:
    rows = governance_service.pending_approvals(session, project=project)
    names = identity_service.usernames(session, {a.requested_by for a, _, _ in rows})
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


def _capacity_line(capacity: dict[str, Any] | None) -> str:
    """What a cluster's agent advertises, in a few words ("" until it did)."""
    if not capacity:
        return ""
    gpus = capacity.get("gpus") or []
    names = sorted({str(g.get("name", "")) for g in gpus if g.get("name")})
    gpu_words = f"{len(gpus)} GPU" + ("" if len(gpus) == 1 else "s")
    if names:
        gpu_words += f" ({', '.join(names)})"
    memory = int(capacity.get("memory_mb", 0)) / 1024
    return f"{capacity.get('cpus', 0)} CPUs, {memory:.1f} GiB, {gpu_words}"


def overview(session: Session, *, project: Project, clusters: bool, alerts: bool) -> dict[str, Any]:
    """Clusters and their heartbeat, recent runs, production models, approvals, alerts."""
    found: dict[str, Any] = {
        "runs": runs(session, project=project, limit=10),
        "approvals": _pending_approvals(session, project),
        "production": [
            {"model": name, "version": row.version, "created_at": row.created_at}
            for name, row in model_service.in_production(session, project=project)
        ],
        "deployments": [
            {
                "name": d.name,
                "model": f"{d.model_name}@{d.model_version}",
                "status": "stopped" if d.stopped_at else "serving",
            }
            for d in sorted(
                deployment_service.list_deployments(session, project=project),
                key=lambda d: d.name,
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
                "capacity": _capacity_line(c.capacity),
            }
            for c in cluster_service.list_clusters(session)
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
            for a in alert_service.open_alerts(session, project=project, limit=20)
        ]
    return found


def _stages(events: list[RunEvent]) -> list[dict[str, Any]]:
    """The run's stage events in order, its checkpoints (when more than one) folded into
    one line where the latest was reported: their count and the newest, newest first."""
    rows = [
        {"ts": e.ts, "stage": e.stage, "status": e.status, "message": e.message} for e in events
    ]
    checkpoints = [row for row in rows if row["stage"] == CHECKPOINT_STAGE]
    if len(checkpoints) < 2:
        return rows
    latest = checkpoints[-1]
    folded = {
        **latest,
        "count": len(checkpoints),
        "folded": checkpoints[::-1][:CHECKPOINTS_LISTED],
    }
    return [
        folded if row is latest else row
        for row in rows
        if row["stage"] != CHECKPOINT_STAGE or row is latest
    ]


def run_live(session: Session, *, project: Project, run_id: str) -> dict[str, Any]:
    """A run with its stages, the tail of its log and its metric charts."""
    run = run_service.get_run(session, project=project, run_id=run_id)
    events = run_service.list_events(session, project=project, run_id=run_id)
    tail = run_service.log_tail(session, run=run, limit=LOG_TAIL)
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for metric in run_service.list_metrics(session, project=project, run_id=run_id):
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
        "stages": _stages(events),
        "log": [line.line for line in tail],
        "charts": [line_chart(name, points) for name, points in sorted(series.items())],
        "spec": run.spec,
    }


def datasets_page(session: Session, *, project: Project) -> list[dict[str, Any]]:
    return [
        {"name": name, "latest": latest, "versions": count}
        for name, latest, count in dataset_service.summaries(session, project=project)
    ]


def dataset_page(session: Session, *, project: Project, name: str) -> list[dict[str, Any]]:
    """Every version (newest first) with its schema, scans, signature and lineage."""
    rows = dataset_service.version_rows(session, project=project, name=name)
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
    for name, row in model_service.versions_by_model(session, project=project):
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
    approvals = governance_service.approvals_of(session, row)
    names = identity_service.usernames(
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
