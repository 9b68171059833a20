"""Runs and what their jobs report: events, logs, metrics and the result."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.errors import Conflict, NotAuthorized, NotFound
from bastion.server.caller import Identity
from bastion.server.db.models import (
    Cluster,
    Project,
    Run,
    RunEvent,
    RunLog,
    RunMetric,
    utcnow,
)
from bastion.server.db.session import UnitOfWork
from bastion.server.services.erasure_results import record_result
from bastion.server.services.evaluations import record_evaluations
from bastion.server.services.jobs import ACTIVE_STATUSES
from bastion.server.services.models import get_model_version
from bastion.spec import RunSpec, parse_dataset_ref

__all__ = [
    "add_logs",
    "add_metric",
    "add_run_event",
    "cancel_run",
    "check_reporter",
    "get_run",
    "list_events",
    "list_logs",
    "list_metrics",
    "list_runs",
    "log_tail",
    "recent_runs",
    "set_result",
]


def get_run(session: Session, *, project: Project, run_id: str) -> Run:
    run = session.get(Run, run_id)
    if run is None or run.project_id != project.id:
        raise NotFound(f"run {run_id} does not exist in project {project.name!r}")
    return run


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


def list_runs(session: Session, *, project: Project, limit: int = 1000) -> list[Run]:
    """The project's runs, newest first."""
    query = select(Run).where(Run.project_id == project.id)
    return list(session.scalars(query.order_by(Run.created_at.desc()).limit(limit)))


def list_logs(
    session: Session, *, project: Project, run_id: str, after: int = 0, limit: int = 1000
) -> list[RunLog]:
    """The run's log lines with an id above ``after``, oldest first."""
    run = get_run(session, project=project, run_id=run_id)
    query = select(RunLog).where(RunLog.run_id == run.id, RunLog.id > after)
    return list(session.scalars(query.order_by(RunLog.id).limit(limit)))


def list_events(session: Session, *, project: Project, run_id: str) -> list[RunEvent]:
    run = get_run(session, project=project, run_id=run_id)
    query = select(RunEvent).where(RunEvent.run_id == run.id)
    return list(session.scalars(query.order_by(RunEvent.id)))


def list_metrics(session: Session, *, project: Project, run_id: str) -> list[RunMetric]:
    run = get_run(session, project=project, run_id=run_id)
    query = select(RunMetric).where(RunMetric.run_id == run.id)
    return list(session.scalars(query.order_by(RunMetric.name, RunMetric.step, RunMetric.id)))


def recent_runs(
    session: Session, *, project: Project, limit: int
) -> list[tuple[Run, str | None, str | None]]:
    """The newest runs, each with the stage it last reported and its cluster's name."""
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
    return [(run, stage, cluster) for run, stage, cluster in rows]


def log_tail(session: Session, *, run: Run, limit: int) -> list[RunLog]:
    """The run's last ``limit`` log lines, oldest first."""
    query = select(RunLog).where(RunLog.run_id == run.id).order_by(RunLog.id.desc()).limit(limit)
    return list(reversed(list(session.scalars(query))))
