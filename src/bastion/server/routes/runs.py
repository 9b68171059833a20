"""Runs: submit, cancel, read; the job's reports (events, logs, metrics, result)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from bastion.api.runs import (
    FederationIn,
    FederationOut,
    LogLineOut,
    LogsIn,
    MetricIn,
    MetricOut,
    ResultIn,
    RunEventIn,
    RunEventOut,
    RunOut,
)
from bastion.server.db.models import (
    Run,
    RunEvent,
    RunLog,
    RunMetric,
)
from bastion.server.deps import DatabaseDep, Principal, require
from bastion.server.permissions import Permission
from bastion.server.services import datasets, federated
from bastion.server.services import jobs as job_service
from bastion.server.services import runs as run_service
from bastion.spec import RunSpec

__all__ = ["router"]

router = APIRouter(tags=["runs"])


@router.get("/projects/{project}/runs", response_model=list[RunOut])
def list_runs(
    project: str,
    principal: Annotated[Principal, require(Permission.RUNS_READ)],
    database: DatabaseDep,
) -> list[Run]:
    with database.read() as session:
        return run_service.list_runs(session, project=principal.require_project())


@router.post("/projects/{project}/runs", response_model=RunOut, status_code=status.HTTP_201_CREATED)
def create_run(
    project: str,
    body: RunSpec,
    principal: Annotated[Principal, require(Permission.RUNS_WRITE)],
    database: DatabaseDep,
) -> Run:
    """Queue a run; the spec is validated in full before anything is stored."""
    with database.write(actor=principal.actor) as unit:
        submit = {
            "train": datasets.submit_training,
            "federated": federated.submit_federated,
        }.get(body.job.type, job_service.create_run)
        return submit(
            unit, project=principal.require_project(), spec=body, user_id=principal.identity.user_id
        )


@router.post("/projects/{project}/runs/{run_id}/cancel", response_model=RunOut)
def cancel_run(
    project: str,
    run_id: str,
    principal: Annotated[Principal, require(Permission.RUNS_WRITE)],
    database: DatabaseDep,
) -> Run:
    with database.write(actor=principal.actor) as unit:
        return run_service.cancel_run(unit, project=principal.require_project(), run_id=run_id)


@router.get("/projects/{project}/runs/{run_id}/logs", response_model=list[LogLineOut])
def list_logs(
    project: str,
    run_id: str,
    principal: Annotated[Principal, require(Permission.RUNS_READ)],
    database: DatabaseDep,
    after: Annotated[int, Query(ge=0, description="Only lines with a larger id.")] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> list[RunLog]:
    with database.read() as session:
        return run_service.list_logs(
            session, project=principal.require_project(), run_id=run_id, after=after, limit=limit
        )


@router.post("/projects/{project}/runs/{run_id}/logs", status_code=status.HTTP_201_CREATED)
def add_logs(
    project: str,
    run_id: str,
    body: LogsIn,
    principal: Annotated[Principal, require(Permission.RUNS_REPORT)],
    database: DatabaseDep,
) -> dict[str, int]:
    with database.write(actor=principal.actor) as unit:
        count = run_service.add_logs(
            unit,
            project=principal.require_project(),
            run_id=run_id,
            lines=body.lines,
            caller=principal.identity,
        )
    return {"lines": count}


@router.get("/projects/{project}/runs/{run_id}", response_model=RunOut)
def get_run(
    project: str,
    run_id: str,
    principal: Annotated[Principal, require(Permission.RUNS_READ)],
    database: DatabaseDep,
) -> Run:
    with database.read() as session:
        return run_service.get_run(session, project=principal.require_project(), run_id=run_id)


@router.get("/projects/{project}/runs/{run_id}/events", response_model=list[RunEventOut])
def list_run_events(
    project: str,
    run_id: str,
    principal: Annotated[Principal, require(Permission.RUNS_READ)],
    database: DatabaseDep,
) -> list[RunEvent]:
    with database.read() as session:
        return run_service.list_events(session, project=principal.require_project(), run_id=run_id)


@router.post(
    "/projects/{project}/runs/{run_id}/events",
    response_model=RunEventOut,
    status_code=status.HTTP_201_CREATED,
)
def add_run_event(
    project: str,
    run_id: str,
    body: RunEventIn,
    principal: Annotated[Principal, require(Permission.RUNS_REPORT)],
    database: DatabaseDep,
) -> RunEvent:
    with database.write(actor=principal.actor) as unit:
        return run_service.add_run_event(
            unit,
            project=principal.require_project(),
            run_id=run_id,
            stage=body.stage,
            status=body.status,
            message=body.message,
            caller=principal.identity,
        )


@router.post("/projects/{project}/runs/{run_id}/result", response_model=RunOut)
def set_result(
    project: str,
    run_id: str,
    body: ResultIn,
    principal: Annotated[Principal, require(Permission.RUNS_REPORT)],
    database: DatabaseDep,
) -> Run:
    """The job's outcome summary (aggregate numbers only), shown with the run."""
    with database.write(actor=principal.actor) as unit:
        return run_service.set_result(
            unit,
            project=principal.require_project(),
            run_id=run_id,
            result=body.result,
            caller=principal.identity,
        )


@router.get("/projects/{project}/runs/{run_id}/metrics", response_model=list[MetricOut])
def list_metrics(
    project: str,
    run_id: str,
    principal: Annotated[Principal, require(Permission.RUNS_READ)],
    database: DatabaseDep,
) -> list[RunMetric]:
    with database.read() as session:
        return run_service.list_metrics(session, project=principal.require_project(), run_id=run_id)


@router.post(
    "/projects/{project}/runs/{run_id}/metrics",
    response_model=MetricOut,
    status_code=status.HTTP_201_CREATED,
)
def add_metric(
    project: str,
    run_id: str,
    body: MetricIn,
    principal: Annotated[Principal, require(Permission.RUNS_REPORT)],
    database: DatabaseDep,
) -> RunMetric:
    with database.write(actor=principal.actor) as unit:
        return run_service.add_metric(
            unit,
            project=principal.require_project(),
            run_id=run_id,
            name=body.name,
            step=body.step,
            value=body.value,
            caller=principal.identity,
        )


@router.post("/projects/{project}/runs/{run_id}/federation", response_model=FederationOut)
def join_federation(
    project: str,
    run_id: str,
    body: FederationIn,
    principal: Annotated[Principal, require(Permission.RUNS_REPORT)],
    database: DatabaseDep,
) -> dict[str, object]:
    """A federated run's job (the aggregator's or a site's) tells the others what they need
    to connect: public material only."""
    project_row = principal.require_project()
    with database.write(actor=principal.actor) as unit:
        federated.join_federation(
            unit,
            project=project_row,
            run_id=run_id,
            payload=body.model_dump(exclude_none=True),
            caller=principal.identity,
        )
        return federated.federation_view(
            unit.session, project=project_row, run_id=run_id, caller=principal.identity
        )


@router.get("/projects/{project}/runs/{run_id}/federation", response_model=FederationOut)
def federation_view(
    project: str,
    run_id: str,
    principal: Annotated[Principal, require(Permission.RUNS_REPORT)],
    database: DatabaseDep,
) -> dict[str, object]:
    """What a federated run's job may know of the others (see the POST)."""
    with database.read() as session:
        return federated.federation_view(
            session, project=principal.require_project(), run_id=run_id, caller=principal.identity
        )
