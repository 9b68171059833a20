"""Clusters, runs, datasets, models, approvals and policies: metadata and its rules."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.errors import Conflict, InvalidSpec, NotAuthorized, NotFound
from bastion.security.credentials import new_token
from bastion.server.db.models import (
    Cluster,
    ClusterJoinToken,
    Model,
    ModelVersion,
    Project,
    Run,
    RunEvent,
    RunLog,
    RunMetric,
    utcnow,
)
from bastion.server.db.session import UnitOfWork
from bastion.server.deps import Identity
from bastion.server.services.evaluations import record_evaluations
from bastion.spec import DATASET_JOB_TYPES, RunSpec, parse_dataset_ref

JOIN_TOKEN_KIND = "bstjoin"  # noqa: S105 - a label, not a secret


# -- clusters -------------------------------------------------------------------------------


def get_cluster(session: Session, name: str) -> Cluster:
    cluster = session.scalars(select(Cluster).where(Cluster.name == name)).first()
    if cluster is None:
        raise NotFound(f"cluster {name!r} does not exist")
    return cluster


def create_cluster(
    unit: UnitOfWork, *, name: str, description: str, join_token_hours: int
) -> tuple[Cluster, str]:
    if unit.session.scalars(select(Cluster).where(Cluster.name == name)).first() is not None:
        raise Conflict(f"cluster {name!r} already exists")
    cluster = Cluster(name=name, description=description)
    unit.session.add(cluster)
    unit.session.flush()
    minted = new_token(JOIN_TOKEN_KIND)
    unit.session.add(
        ClusterJoinToken(
            id=minted.id,
            cluster_id=cluster.id,
            secret_hash=minted.secret_hash,
            expires_at=utcnow() + dt.timedelta(hours=join_token_hours),
        )
    )
    unit.record("cluster.create", f"cluster:{name}", {"join_token_hours": join_token_hours})
    return cluster, minted.token


# -- runs -----------------------------------------------------------------------------------


def get_run(session: Session, *, project: Project, run_id: str) -> Run:
    run = session.get(Run, run_id)
    if run is None or run.project_id != project.id:
        raise NotFound(f"run {run_id} does not exist in project {project.name!r}")
    return run


def create_run(
    unit: UnitOfWork,
    *,
    project: Project,
    spec: RunSpec,
    user_id: str,
    data_job: bool = False,
    routed: bool = False,
) -> Run:
    """Queue a validated run spec for its cluster's agent.

    Dataset jobs come only through the dataset routes (``data_job=True``), which check
    the data steward's permissions and that the version lives on the run's cluster.
    """
    if spec.job.type in DATASET_JOB_TYPES and not data_job:
        raise InvalidSpec(
            f"job.type {spec.job.type!r} is queued by 'bastion data' verbs, not as a run spec"
        )
    if spec.job.type == "serve" and not routed:
        raise InvalidSpec(
            "job.type 'serve' is queued by 'bastion deploy create', not as a run spec"
        )
    if spec.project != project.name:
        raise InvalidSpec(
            f"spec.project is {spec.project!r} but the run is submitted to project {project.name!r}"
        )
    cluster = get_cluster(unit.session, spec.cluster)
    reason = (
        f"waiting for the agent of cluster {cluster.name!r}"
        if cluster.last_heartbeat is not None
        else f"cluster {cluster.name!r} has no agent yet; start one with 'bastion agent start'"
    )
    run = Run(
        project_id=project.id,
        cluster_id=cluster.id,
        name=spec.name,
        spec=spec.model_dump(mode="json"),
        max_retries=spec.max_retries,
        status_reason=reason,
        created_by=user_id,
    )
    unit.session.add(run)
    unit.session.flush()
    unit.record(
        "run.create",
        f"run:{run.id}",
        {"project": project.name, "name": spec.name, "cluster": cluster.name, "status": "queued"},
    )
    return run


#: A run whose attempt is executing: its lease can be renewed and its job may report.
ACTIVE_STATUSES = ("leased", "running")


def check_reporter(*, caller: Identity, run: Run) -> None:
    """Only the current attempt's job (or the agent holding the lease) may report on a run."""
    if caller.kind == "job":
        bound = [s for s in caller.scopes if s.startswith("run:")]
        if not bound:
            raise NotAuthorized("this job token is not bound to a run")
        _, run_id, attempt = bound[0].split(":")
        if run_id != run.id:
            raise NotAuthorized("a job token can only report on its own run")
        if int(attempt) != run.attempt:
            raise Conflict(f"attempt {attempt} was superseded by attempt {run.attempt} (fenced)")
    elif caller.kind == "agent":
        if run.leased_by != caller.user_id:
            raise NotAuthorized("this agent does not hold the lease of the run")
    else:  # pragma: no cover - the permission table admits only agents and jobs here
        raise NotAuthorized("only jobs and agents report on runs")
    if run.status not in ACTIVE_STATUSES:
        raise Conflict(f"run {run.id} is {run.status}; attempt {run.attempt} may not report")


_TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
_NEXT: dict[str, frozenset[str]] = {
    "leased": frozenset({"running", "succeeded", "failed"}),
    "running": frozenset({"running", "succeeded", "failed"}),
}


def add_run_event(
    unit: UnitOfWork,
    *,
    project: Project,
    run_id: str,
    stage: str,
    status: str,
    message: str,
    caller: Identity,
) -> RunEvent:
    """Record a stage event from the run's current job (or its agent) and move the status."""
    run = get_run(unit.session, project=project, run_id=run_id)
    check_reporter(caller=caller, run=run)
    if run.status in _TERMINAL:
        raise Conflict(f"run {run_id} already ended ({run.status}); no more events")
    if status not in _NEXT.get(run.status, frozenset()):
        raise Conflict(f"run {run_id} cannot go from {run.status} to {status}")
    event = RunEvent(run_id=run.id, stage=stage, status=status, message=message)
    unit.session.add(event)
    if status != run.status:
        unit.record(
            "run.status",
            f"run:{run.id}",
            {"from": run.status, "to": status, "stage": stage, "attempt": run.attempt},
        )
    else:
        unit.record("run.event", f"run:{run.id}", {"stage": stage, "attempt": run.attempt})
    run.status, run.updated_at = status, utcnow()
    run.status_reason = message[:500] if status in _TERMINAL else f"stage {stage}"
    if status in _TERMINAL:
        run.lease_expires_at = None
    return event


def set_result(
    unit: UnitOfWork, *, project: Project, run_id: str, result: dict[str, Any], caller: Identity
) -> Run:
    """Store the job's outcome summary (aggregates only; the job decides what it reports)."""
    run = get_run(unit.session, project=project, run_id=run_id)
    check_reporter(caller=caller, run=run)
    run.result, run.updated_at = result, utcnow()
    unit.record(
        "run.result", f"run:{run.id}", {"keys": sorted(result)[:20], "attempt": run.attempt}
    )
    job = RunSpec.model_validate(run.spec).job
    if job.type == "erase":
        from bastion.server.services.privacy import record_result  # noqa: PLC0415 - cycle

        record_result(unit, project=project, run=run, job=job, result=result)
    if job.type == "evaluate":  # the evidence joins the version the run evaluated
        name, number = parse_dataset_ref(job.model)
        version = get_model_version(unit.session, project=project, name=name, version=number)
        record_evaluations(
            unit,
            project=project,
            version=version,
            reference=job.model,
            run=run,
            results=result.get("evaluations"),
        )
    return run


def add_logs(
    unit: UnitOfWork, *, project: Project, run_id: str, lines: list[str], caller: Identity
) -> int:
    run = get_run(unit.session, project=project, run_id=run_id)
    check_reporter(caller=caller, run=run)
    unit.session.add_all(RunLog(run_id=run.id, attempt=run.attempt, line=line) for line in lines)
    unit.record("run.logs", f"run:{run.id}", {"lines": len(lines), "attempt": run.attempt})
    return len(lines)


def cancel_run(unit: UnitOfWork, *, project: Project, run_id: str) -> Run:
    run = get_run(unit.session, project=project, run_id=run_id)
    if run.status in _TERMINAL:
        raise Conflict(f"run {run_id} already ended ({run.status})")
    previous = run.status
    run.status, run.status_reason, run.updated_at = "cancelled", "cancelled by request", utcnow()
    run.lease_expires_at = None
    unit.record("run.status", f"run:{run.id}", {"from": previous, "to": "cancelled"})
    return run


def add_metric(
    unit: UnitOfWork,
    *,
    project: Project,
    run_id: str,
    name: str,
    step: int,
    value: float,
    caller: Identity,
) -> RunMetric:
    run = get_run(unit.session, project=project, run_id=run_id)
    check_reporter(caller=caller, run=run)
    metric = RunMetric(run_id=run.id, name=name, step=step, value=value)
    unit.session.add(metric)
    unit.record("run.metric", f"run:{run.id}", {"name": name, "step": step})
    return metric


# -- models --------------------------------------------------------------------------


def get_model(session: Session, *, project: Project, name: str) -> Model:
    model = session.scalars(
        select(Model).where(Model.project_id == project.id, Model.name == name)
    ).first()
    if model is None:
        raise NotFound(f"model {name!r} does not exist in project {project.name!r}")
    return model


def create_model(unit: UnitOfWork, *, project: Project, name: str) -> Model:
    exists = unit.session.scalars(
        select(Model).where(Model.project_id == project.id, Model.name == name)
    ).first()
    if exists is not None:
        raise Conflict(f"model {name!r} already exists in project {project.name!r}")
    model = Model(project_id=project.id, name=name)
    unit.session.add(model)
    unit.record("model.create", f"model:{project.name}/{name}")
    return model


def record_model_version(
    unit: UnitOfWork,
    *,
    project: Project,
    name: str,
    caller: Identity,
    fields: dict[str, Any],
) -> ModelVersion:
    """Record the model version an agent sealed at the end of a training run.

    (1) The run must exist in this project and be leased by this agent.
    (2) It must be a training run that registers this model.
    (3) One run makes one version: a repeated report returns the recorded one.

    The evaluate stage's summaries (``evidence["evaluation"]``) are stored as the
    version's first evaluations.
    """
    run = unit.session.get(Run, fields["run_id"])
    # (1) ...
    if run is None or run.project_id != project.id:
        raise NotFound(f"run {fields['run_id']} does not exist in project {project.name!r}")
    if run.leased_by != caller.user_id:
        raise NotAuthorized("only the agent holding the run's lease records its model version")
    # (2) ...
    job = RunSpec.model_validate(run.spec).job
    if job.type not in ("train", "import-model") or job.model_name != name:
        raise Conflict(f"run {run.id} does not train or import model {name!r}")
    # (3) ...
    existing = unit.session.scalars(
        select(ModelVersion).where(ModelVersion.run_id == run.id)
    ).first()
    if existing is not None:
        return existing
    if run.status not in ACTIVE_STATUSES:
        raise Conflict(f"run {run.id} is {run.status}; it can no longer record a version")
    model = unit.session.scalars(
        select(Model).where(Model.project_id == project.id, Model.name == name)
    ).first()
    if model is None:
        model = create_model(unit, project=project, name=name)
        unit.session.flush()
    latest = unit.session.scalar(
        select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id)
    )
    evidence = dict(fields["evidence"])
    evaluations = evidence.pop("evaluation", None)
    version = ModelVersion(
        model_id=model.id,
        version=(latest or 0) + 1,
        run_id=run.id,
        evidence=evidence,
        manifest_hash=fields["manifest_hash"],
        signature=fields["signature"],
        cluster_id=run.cluster_id,
        created_by=run.created_by,
    )
    unit.session.add(version)
    unit.session.flush()
    unit.record(
        "model.version.create",
        f"model:{project.name}/{name}@{version.version}",
        {"run": run.id, "manifest_hash": version.manifest_hash},
    )
    if evaluations:
        record_evaluations(
            unit,
            project=project,
            version=version,
            reference=f"{name}@{version.version}",
            run=run,
            results=evaluations,
        )
    return version


def get_model_version(
    session: Session, *, project: Project, name: str, version: int
) -> ModelVersion:
    model = get_model(session, project=project, name=name)
    found = session.scalars(
        select(ModelVersion).where(
            ModelVersion.model_id == model.id, ModelVersion.version == version
        )
    ).first()
    if found is None:
        raise NotFound(f"model {name!r} has no version {version}")
    return found


# -- approvals and policies -----------------------------------------------------------------
