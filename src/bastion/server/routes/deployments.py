"""Deployments, their serving keys, and the serve job's key sync and audit upload."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.server.db.models import Cluster, Deployment, Run, RunEvent, ServingKey
from bastion.server.deps import DatabaseDep, Principal, require
from bastion.server.permissions import Permission
from bastion.server.schemas.deployments import (
    DeploymentIn,
    DeploymentOut,
    DeploymentUpdateIn,
    NewServingKeyOut,
    ServeAuditIn,
    ServingKeyIn,
    ServingKeyOut,
)
from bastion.server.services import deployments as service

router = APIRouter(tags=["deployments"])


def _replica(session: Session, run_id: str) -> dict[str, Any]:
    run = session.get(Run, run_id)
    last = session.scalars(
        select(RunEvent).where(RunEvent.run_id == run_id).order_by(RunEvent.id.desc()).limit(1)
    ).first()
    state = run.status if run else "unknown"
    message = last.message if last else ""
    if state in ("queued", "leased") or (state == "running" and not message.startswith("serving ")):
        state = "starting"
    if run is not None and run.status != "running":
        message = run.status_reason
    return {"run_id": run_id, "status": state, "message": message}


def _describe(session: Session, deployment: Deployment) -> dict[str, Any]:
    """The deployment and each replica's server: starting until it says where it listens."""
    cluster = session.get(Cluster, deployment.cluster_id)
    replicas = [_replica(session, run_id) for run_id in deployment.replica_runs]
    states = {r["status"] for r in replicas}
    state = states.pop() if len(states) == 1 else "starting"
    if "failed" in {r["status"] for r in replicas}:
        state = "failed"
    if deployment.stopped_at:
        state = "stopped"
    return {
        "id": deployment.id,
        "name": deployment.name,
        "model": f"{deployment.model_name}@{deployment.model_version}",
        "cluster": cluster.name if cluster else "",
        "run_id": deployment.run_id,
        "replicas": replicas,
        "status": state,
        "status_reason": next(
            (r["message"] for r in replicas if r["status"] != "running"),
            replicas[0]["message"] if replicas else "",
        ),
        "unapproved": deployment.unapproved,
        "settings": deployment.settings,
        "history": deployment.history,
        "created_at": deployment.created_at,
        "stopped_at": deployment.stopped_at,
    }


@router.post(
    "/projects/{project}/deployments",
    response_model=DeploymentOut,
    status_code=status.HTTP_201_CREATED,
)
def create_deployment(
    project: str,
    body: DeploymentIn,
    principal: Annotated[Principal, require(Permission.DEPLOYMENTS_WRITE)],
    database: DatabaseDep,
) -> dict[str, Any]:
    """Serve a production model version on a cluster (the agent starts ``bastion serve``)."""
    settings = body.model_dump(
        mode="json",
        include={"host", "port", "tls_cert", "tls_key", "redis_url", "replicas", "serve"},
    )
    with database.write(actor=principal.actor) as unit:
        made = service.create_deployment(
            unit,
            project=principal.require_project(),
            name=body.name,
            model=body.model,
            cluster=body.cluster,
            settings=settings,
            allow_unapproved=body.allow_unapproved,
            user_id=principal.identity.user_id,
        )
        return _describe(unit.session, made)


@router.get("/projects/{project}/deployments", response_model=list[DeploymentOut])
def list_deployments(
    project: str,
    principal: Annotated[Principal, require(Permission.DEPLOYMENTS_READ)],
    database: DatabaseDep,
) -> list[dict[str, Any]]:
    with database.read() as session:
        found = service.list_deployments(session, project=principal.require_project())
        return [_describe(session, d) for d in found]


@router.get("/projects/{project}/deployments/{deployment}", response_model=DeploymentOut)
def get_deployment(
    project: str,
    deployment: str,
    principal: Annotated[Principal, require(Permission.DEPLOYMENTS_READ)],
    database: DatabaseDep,
) -> dict[str, Any]:
    with database.read() as session:
        found = service.get_deployment(
            session, project=principal.require_project(), name=deployment
        )
        return _describe(session, found)


@router.post("/projects/{project}/deployments/{deployment}/stop", response_model=DeploymentOut)
def stop_deployment(
    project: str,
    deployment: str,
    principal: Annotated[Principal, require(Permission.DEPLOYMENTS_WRITE)],
    database: DatabaseDep,
) -> dict[str, Any]:
    with database.write(actor=principal.actor) as unit:
        stopped = service.stop_deployment(
            unit, project=principal.require_project(), name=deployment
        )
        return _describe(unit.session, stopped)


@router.post("/projects/{project}/deployments/{deployment}/update", response_model=DeploymentOut)
def update_deployment(
    project: str,
    deployment: str,
    body: DeploymentUpdateIn,
    principal: Annotated[Principal, require(Permission.DEPLOYMENTS_WRITE)],
    database: DatabaseDep,
) -> dict[str, Any]:
    """Hot-swap to another version of the model; the server verifies it before swapping."""
    with database.write(actor=principal.actor) as unit:
        changed = service.update_deployment(
            unit,
            project=principal.require_project(),
            name=deployment,
            model=body.model,
            allow_unapproved=body.allow_unapproved,
        )
        return _describe(unit.session, changed)


@router.post("/projects/{project}/deployments/{deployment}/rollback", response_model=DeploymentOut)
def rollback_deployment(
    project: str,
    deployment: str,
    principal: Annotated[Principal, require(Permission.DEPLOYMENTS_WRITE)],
    database: DatabaseDep,
) -> dict[str, Any]:
    """Back to the version served before the last update."""
    with database.write(actor=principal.actor) as unit:
        changed = service.rollback_deployment(
            unit, project=principal.require_project(), name=deployment
        )
        return _describe(unit.session, changed)


@router.post(
    "/projects/{project}/deployments/{deployment}/keys",
    response_model=NewServingKeyOut,
    status_code=status.HTTP_201_CREATED,
)
def create_key(
    project: str,
    deployment: str,
    body: ServingKeyIn,
    principal: Annotated[Principal, require(Permission.SERVING_KEYS_WRITE)],
    database: DatabaseDep,
) -> dict[str, Any]:
    """Mint a serving key; its token is in this response only."""
    expires = dt.timedelta(seconds=body.expires_in_seconds) if body.expires_in_seconds else None
    with database.write(actor=principal.actor) as unit:
        key, token = service.create_key(
            unit,
            project=principal.require_project(),
            deployment=deployment,
            scopes=list(body.scopes),
            rate=body.rate,
            burst=body.burst,
            quota=body.quota,
            expires_in=expires,
            name=body.name,
            user_id=principal.identity.user_id,
        )
        unit.session.flush()
        return {**ServingKeyOut.model_validate(key).model_dump(), "token": token}


@router.get("/projects/{project}/deployments/{deployment}/keys", response_model=list[ServingKeyOut])
def list_keys(
    project: str,
    deployment: str,
    principal: Annotated[Principal, require(Permission.DEPLOYMENTS_READ)],
    database: DatabaseDep,
) -> list[ServingKey]:
    with database.read() as session:
        return service.list_keys(
            session, project=principal.require_project(), deployment=deployment
        )


@router.post(
    "/projects/{project}/deployments/{deployment}/keys/{key_id}/revoke",
    response_model=ServingKeyOut,
)
def revoke_key(
    project: str,
    deployment: str,
    key_id: str,
    principal: Annotated[Principal, require(Permission.SERVING_KEYS_WRITE)],
    database: DatabaseDep,
) -> ServingKey:
    with database.write(actor=principal.actor) as unit:
        return service.revoke_key(
            unit, project=principal.require_project(), deployment=deployment, key_id=key_id
        )


@router.get("/projects/{project}/runs/{run_id}/serving-keys")
def serving_keys(
    project: str,
    run_id: str,
    principal: Annotated[Principal, require(Permission.RUNS_REPORT)],
    database: DatabaseDep,
) -> list[dict[str, Any]]:
    """The serve job's copy of its deployment's key records (hashes, never secrets)."""
    with database.read() as session:
        return service.key_records(
            session, project=principal.require_project(), run_id=run_id, caller=principal.identity
        )


@router.post("/projects/{project}/runs/{run_id}/serving-audit")
def serving_audit(
    project: str,
    run_id: str,
    body: ServeAuditIn,
    principal: Annotated[Principal, require(Permission.RUNS_REPORT)],
    database: DatabaseDep,
) -> dict[str, int]:
    """The serve job's request events (into the audit log) and findings (into alerts)."""
    with database.write(actor=principal.actor) as unit:
        count = service.ingest_audit(
            unit,
            project=principal.require_project(),
            run_id=run_id,
            events=body.events,
            findings=body.findings,
            caller=principal.identity,
        )
    return {"events": count}
