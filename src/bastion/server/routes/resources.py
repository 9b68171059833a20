"""Clusters, runs and models: metadata only (promotion and policies: routes/governance.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from bastion.api.clusters import (
    ClusterIn,
    ClusterOut,
    HeartbeatIn,
    HeartbeatOut,
    LeaseOut,
    NewClusterOut,
)
from bastion.api.models import (
    EvaluateIn,
    EvaluationOut,
    ExportIn,
    ImportIn,
    ModelIn,
    ModelOut,
    ModelVersionIn,
    ModelVersionOut,
)
from bastion.api.runs import (
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
    Cluster,
    Evaluation,
    Model,
    ModelVersion,
    Run,
    RunEvent,
    RunLog,
    RunMetric,
)
from bastion.server.db.session import Database
from bastion.server.deps import DatabaseDep, NamePath, Principal, require
from bastion.server.permissions import Permission
from bastion.server.services import agents, alerts, datasets, deployments, evaluations
from bastion.server.services import resources as service
from bastion.spec import RunSpec

#: The card page: its own inline styles and SVG, nothing else (no script at all).
CARD_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

clusters = APIRouter(tags=["clusters"])
runs = APIRouter(tags=["runs"])
registry = APIRouter(tags=["models"])


# -- clusters -------------------------------------------------------------------------------


@clusters.get("/clusters", response_model=list[ClusterOut])
def list_clusters(
    _: Annotated[Principal, require(Permission.CLUSTERS_READ)], database: DatabaseDep
) -> list[Cluster]:
    with database.read() as session:
        return list(session.scalars(select(Cluster).order_by(Cluster.name)))


@clusters.post("/clusters", response_model=NewClusterOut, status_code=status.HTTP_201_CREATED)
def create_cluster(
    body: ClusterIn,
    principal: Annotated[Principal, require(Permission.CLUSTERS_WRITE)],
    database: DatabaseDep,
) -> NewClusterOut:
    """Register a compute plane; the one-time join token is in this response only."""
    with database.write(actor=principal.actor) as unit:
        cluster, token = service.create_cluster(
            unit,
            name=body.name,
            description=body.description,
            join_token_hours=body.join_token_hours,
        )
    return NewClusterOut.model_validate(
        {**ClusterOut.model_validate(cluster).model_dump(), "join_token": token}
    )


@clusters.get("/clusters/{name}", response_model=ClusterOut)
def get_cluster(
    name: str, _: Annotated[Principal, require(Permission.CLUSTERS_READ)], database: DatabaseDep
) -> Cluster:
    with database.read() as session:
        return service.get_cluster(session, name)


@clusters.post("/clusters/{name}/heartbeat", response_model=HeartbeatOut)
def heartbeat(
    name: NamePath,
    body: HeartbeatIn,
    request: Request,
    principal: Annotated[Principal, require(Permission.CLUSTERS_HEARTBEAT)],
    database: DatabaseDep,
) -> HeartbeatOut:
    """The cluster's agent is alive; renew its leases and learn which runs to stop."""
    with database.write(actor=principal.actor) as unit:
        _, stop = agents.heartbeat(
            unit,
            caller=principal.identity,
            name=name,
            active=body.runs,
            lease_seconds=request.app.state.settings.lease_seconds,
            stopping=body.stopping,
        )
        serve = deployments.desired_models(unit.session, run_ids=sorted(set(body.runs) - set(stop)))
    return HeartbeatOut(stop=stop, serve=serve)


@clusters.post(
    "/clusters/{name}/lease",
    response_model=LeaseOut,
    responses={204: {"description": "No work arrived while waiting."}},
)
async def lease(
    name: NamePath,
    request: Request,
    principal: Annotated[Principal, require(Permission.CLUSTERS_HEARTBEAT)],
    database: DatabaseDep,
    wait: Annotated[
        float, Query(ge=0, le=30, description="Long-poll for up to this many seconds.")
    ] = 0,
) -> Any:
    """Long-poll for the next queued run of this cluster; 204 when none arrived in time."""
    deadline = time.monotonic() + wait
    while True:
        # An agent that died mid-poll must not be handed a run it will never start.
        if await request.is_disconnected():
            return Response(status_code=status.HTTP_204_NO_CONTENT)
        seconds = request.app.state.settings.lease_seconds
        offered = await run_in_threadpool(_lease_once, database, principal, name, seconds)
        if offered is not None:
            return LeaseOut(**offered.__dict__)
        if time.monotonic() >= deadline:
            return Response(status_code=status.HTTP_204_NO_CONTENT)
        await asyncio.sleep(min(LEASE_POLL_SECONDS, max(0.0, deadline - time.monotonic())))


LEASE_POLL_SECONDS = 0.25


def _lease_once(
    database: Database, principal: Principal, name: str, lease_seconds: int
) -> agents.Lease | None:
    with database.write(actor=principal.actor) as unit:
        return agents.lease_next(
            unit, caller=principal.identity, name=name, lease_seconds=lease_seconds
        )


# -- runs -----------------------------------------------------------------------------------


@runs.get("/projects/{project}/runs", response_model=list[RunOut])
def list_runs(
    project: str,
    principal: Annotated[Principal, require(Permission.RUNS_READ)],
    database: DatabaseDep,
) -> list[Run]:
    with database.read() as session:
        query = select(Run).where(Run.project_id == principal.require_project().id)
        return list(session.scalars(query.order_by(Run.created_at.desc()).limit(1000)))


@runs.post("/projects/{project}/runs", response_model=RunOut, status_code=status.HTTP_201_CREATED)
def create_run(
    project: str,
    body: RunSpec,
    principal: Annotated[Principal, require(Permission.RUNS_WRITE)],
    database: DatabaseDep,
) -> Run:
    """Queue a run; the spec is validated in full before anything is stored."""
    with database.write(actor=principal.actor) as unit:
        submit = datasets.submit_training if body.job.type == "train" else service.create_run
        return submit(
            unit, project=principal.require_project(), spec=body, user_id=principal.identity.user_id
        )


@runs.post("/projects/{project}/runs/{run_id}/cancel", response_model=RunOut)
def cancel_run(
    project: str,
    run_id: str,
    principal: Annotated[Principal, require(Permission.RUNS_WRITE)],
    database: DatabaseDep,
) -> Run:
    with database.write(actor=principal.actor) as unit:
        return service.cancel_run(unit, project=principal.require_project(), run_id=run_id)


@runs.get("/projects/{project}/runs/{run_id}/logs", response_model=list[LogLineOut])
def list_logs(
    project: str,
    run_id: str,
    principal: Annotated[Principal, require(Permission.RUNS_READ)],
    database: DatabaseDep,
    after: Annotated[int, Query(ge=0, description="Only lines with a larger id.")] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> list[RunLog]:
    with database.read() as session:
        run = service.get_run(session, project=principal.require_project(), run_id=run_id)
        query = select(RunLog).where(RunLog.run_id == run.id, RunLog.id > after)
        return list(session.scalars(query.order_by(RunLog.id).limit(limit)))


@runs.post("/projects/{project}/runs/{run_id}/logs", status_code=status.HTTP_201_CREATED)
def add_logs(
    project: str,
    run_id: str,
    body: LogsIn,
    principal: Annotated[Principal, require(Permission.RUNS_REPORT)],
    database: DatabaseDep,
) -> dict[str, int]:
    with database.write(actor=principal.actor) as unit:
        count = service.add_logs(
            unit,
            project=principal.require_project(),
            run_id=run_id,
            lines=body.lines,
            caller=principal.identity,
        )
    return {"lines": count}


@runs.get("/projects/{project}/runs/{run_id}", response_model=RunOut)
def get_run(
    project: str,
    run_id: str,
    principal: Annotated[Principal, require(Permission.RUNS_READ)],
    database: DatabaseDep,
) -> Run:
    with database.read() as session:
        return service.get_run(session, project=principal.require_project(), run_id=run_id)


@runs.get("/projects/{project}/runs/{run_id}/events", response_model=list[RunEventOut])
def list_run_events(
    project: str,
    run_id: str,
    principal: Annotated[Principal, require(Permission.RUNS_READ)],
    database: DatabaseDep,
) -> list[RunEvent]:
    with database.read() as session:
        run = service.get_run(session, project=principal.require_project(), run_id=run_id)
        return list(
            session.scalars(select(RunEvent).where(RunEvent.run_id == run.id).order_by(RunEvent.id))
        )


@runs.post(
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
        return service.add_run_event(
            unit,
            project=principal.require_project(),
            run_id=run_id,
            stage=body.stage,
            status=body.status,
            message=body.message,
            caller=principal.identity,
        )


@runs.post("/projects/{project}/runs/{run_id}/result", response_model=RunOut)
def set_result(
    project: str,
    run_id: str,
    body: ResultIn,
    principal: Annotated[Principal, require(Permission.RUNS_REPORT)],
    database: DatabaseDep,
) -> Run:
    """The job's outcome summary (aggregate numbers only), shown with the run."""
    with database.write(actor=principal.actor) as unit:
        return service.set_result(
            unit,
            project=principal.require_project(),
            run_id=run_id,
            result=body.result,
            caller=principal.identity,
        )


@runs.get("/projects/{project}/runs/{run_id}/metrics", response_model=list[MetricOut])
def list_metrics(
    project: str,
    run_id: str,
    principal: Annotated[Principal, require(Permission.RUNS_READ)],
    database: DatabaseDep,
) -> list[RunMetric]:
    with database.read() as session:
        run = service.get_run(session, project=principal.require_project(), run_id=run_id)
        query = select(RunMetric).where(RunMetric.run_id == run.id)
        return list(session.scalars(query.order_by(RunMetric.name, RunMetric.step)))


@runs.post(
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
        return service.add_metric(
            unit,
            project=principal.require_project(),
            run_id=run_id,
            name=body.name,
            step=body.step,
            value=body.value,
            caller=principal.identity,
        )


# -- models --------------------------------------------------------------------------


@registry.get("/projects/{project}/models", response_model=list[ModelOut])
def list_models(
    project: str,
    principal: Annotated[Principal, require(Permission.MODELS_READ)],
    database: DatabaseDep,
) -> list[Model]:
    with database.read() as session:
        query = select(Model).where(Model.project_id == principal.require_project().id)
        return list(session.scalars(query.order_by(Model.name)))


@registry.post(
    "/projects/{project}/models", response_model=ModelOut, status_code=status.HTTP_201_CREATED
)
def create_model(
    project: str,
    body: ModelIn,
    principal: Annotated[Principal, require(Permission.MODELS_WRITE)],
    database: DatabaseDep,
) -> Model:
    with database.write(actor=principal.actor) as unit:
        return service.create_model(unit, project=principal.require_project(), name=body.name)


@registry.get("/projects/{project}/models/{name}/versions", response_model=list[ModelVersionOut])
def list_model_versions(
    project: str,
    name: NamePath,
    principal: Annotated[Principal, require(Permission.MODELS_READ)],
    database: DatabaseDep,
) -> list[ModelVersion]:
    with database.read() as session:
        model = service.get_model(session, project=principal.require_project(), name=name)
        query = select(ModelVersion).where(ModelVersion.model_id == model.id)
        return list(session.scalars(query.order_by(ModelVersion.version)))


@registry.get(
    "/projects/{project}/models/{name}/versions/{version}", response_model=ModelVersionOut
)
def get_model_version(
    project: str,
    name: NamePath,
    version: Annotated[int, Path(ge=1, le=10**9)],
    principal: Annotated[Principal, require(Permission.MODELS_READ)],
    database: DatabaseDep,
) -> ModelVersion:
    with database.read() as session:
        return service.get_model_version(
            session, project=principal.require_project(), name=name, version=version
        )


@registry.post(
    "/projects/{project}/models/{name}/versions/{version}/verify",
    response_model=RunOut,
    status_code=status.HTTP_201_CREATED,
)
def verify_model_version(
    project: str,
    name: NamePath,
    version: Annotated[int, Path(ge=1, le=10**9)],
    principal: Annotated[Principal, require(Permission.CHECKS_RUN)],
    database: DatabaseDep,
) -> Run:
    """Queue a check of the sealed model (signature, every file) on the cluster holding it."""
    with database.write(actor=principal.actor) as unit:
        return datasets.submit_job(
            unit,
            project=principal.require_project(),
            name=name,
            user_id=principal.identity.user_id,
            job={"type": "verify-model", "model": f"{name}@{version}"},
        )


@registry.post(
    "/projects/{project}/models/{name}/versions/{version}/export",
    response_model=RunOut,
    status_code=status.HTTP_201_CREATED,
)
def export_model_version(
    project: str,
    name: NamePath,
    version: Annotated[int, Path(ge=1, le=10**9)],
    body: ExportIn,
    principal: Annotated[Principal, require(Permission.MODELS_WRITE)],
    database: DatabaseDep,
) -> Run:
    """Queue the re-encryption of a model to another cluster's public key (a transfer file)."""
    with database.write(actor=principal.actor) as unit:
        run = datasets.submit_job(
            unit,
            project=principal.require_project(),
            name=name,
            user_id=principal.identity.user_id,
            job={
                "type": "export-model",
                "model": f"{name}@{version}",
                "to_cluster": body.to_cluster,
            },
        )
        unit.session.flush()
        alerts.check_export_volume(
            unit, actor=principal.actor, user_id=principal.identity.user_id, project=project
        )
        return run


@registry.post(
    "/projects/{project}/models/{name}/versions/{version}/evaluate",
    response_model=RunOut,
    status_code=status.HTTP_201_CREATED,
)
def evaluate_model_version(
    project: str,
    name: NamePath,
    version: Annotated[int, Path(ge=1, le=10**9)],
    body: EvaluateIn,
    principal: Annotated[Principal, require(Permission.MODELS_WRITE)],
    database: DatabaseDep,
) -> Run:
    """Queue an evaluation of a version on the cluster that holds it and its training data."""
    with database.write(actor=principal.actor) as unit:
        return datasets.submit_job(
            unit,
            project=principal.require_project(),
            name=name,
            user_id=principal.identity.user_id,
            job={
                "type": "evaluate",
                "model": f"{name}@{version}",
                "evaluate": body.evaluate.model_dump(mode="json", exclude_none=True),
            },
        )


@registry.get(
    "/projects/{project}/models/{name}/versions/{version}/evaluations",
    response_model=list[EvaluationOut],
)
def list_model_evaluations(
    project: str,
    name: NamePath,
    version: Annotated[int, Path(ge=1, le=10**9)],
    principal: Annotated[Principal, require(Permission.MODELS_READ)],
    database: DatabaseDep,
) -> list[Evaluation]:
    """Every evaluation of the version, oldest first (the newest of each kind is current)."""
    with database.read() as session:
        row = service.get_model_version(
            session, project=principal.require_project(), name=name, version=version
        )
        return evaluations.list_evaluations(session, row)


def _card(principal: Principal, database: Database, name: str, version: int) -> dict[str, Any]:
    with database.read() as session:
        project = principal.require_project()
        row = service.get_model_version(session, project=project, name=name, version=version)
        return evaluations.model_card(session, project=project, name=name, row=row)


@registry.get("/projects/{project}/models/{name}/versions/{version}/card")
def model_card(
    project: str,
    name: NamePath,
    version: Annotated[int, Path(ge=1, le=10**9)],
    principal: Annotated[Principal, require(Permission.MODELS_READ)],
    database: DatabaseDep,
) -> dict[str, Any]:
    """The model card as JSON, with the OWASP ML Top 10 scorecard."""
    return _card(principal, database, name, version)


@registry.get(
    "/projects/{project}/models/{name}/versions/{version}/card.html",
    response_class=HTMLResponse,
)
def model_card_html(
    project: str,
    name: NamePath,
    version: Annotated[int, Path(ge=1, le=10**9)],
    principal: Annotated[Principal, require(Permission.MODELS_READ)],
    database: DatabaseDep,
) -> HTMLResponse:
    """The model card as one self-contained HTML page (plots inline as SVG, no script)."""
    from bastion.evaluate.card import render_html  # noqa: PLC0415 - matplotlib on demand

    page = render_html(_card(principal, database, name, version))
    return HTMLResponse(page, headers={"Content-Security-Policy": CARD_CSP})


@registry.post("/projects/{project}/models/{name}/import", response_model=RunOut, status_code=201)
def import_model(
    project: str,
    name: NamePath,
    body: ImportIn,
    principal: Annotated[Principal, require(Permission.MODELS_WRITE)],
    database: DatabaseDep,
) -> Run:
    """Queue the import of a transfer file on the cluster it is addressed to."""
    with database.write(actor=principal.actor) as unit:
        return datasets.submit_job(
            unit,
            project=principal.require_project(),
            name=name,
            user_id=principal.identity.user_id,
            job={"type": "import-model", "source": body.source, "model_name": name},
            cluster=body.cluster,
        )


@registry.post(
    "/projects/{project}/models/{name}/versions",
    response_model=ModelVersionOut,
    status_code=status.HTTP_201_CREATED,
)
def record_model_version(
    project: str,
    name: NamePath,
    body: ModelVersionIn,
    principal: Annotated[Principal, require(Permission.MODELS_RECORD)],
    database: DatabaseDep,
) -> ModelVersion:
    """The agent records the model version it sealed for a training run."""
    with database.write(actor=principal.actor) as unit:
        return service.record_model_version(
            unit,
            project=principal.require_project(),
            name=name,
            caller=principal.identity,
            fields=body.model_dump(),
        )
