"""Deployments, their serving keys, and the serve job's key sync and audit upload."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, status

from bastion.api.deployments import (
    DeploymentIn,
    DeploymentOut,
    DeploymentUpdateIn,
    NewServingKeyOut,
    ServeAuditIn,
    ServingKeyIn,
    ServingKeyOut,
)
from bastion.server.db.models import ServingKey
from bastion.server.deps import DatabaseDep, Principal, require
from bastion.server.permissions import Permission
from bastion.server.services import deployments as service

__all__ = ["router"]

router = APIRouter(tags=["deployments"])


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
        return service.describe(unit.session, made)


@router.get("/projects/{project}/deployments", response_model=list[DeploymentOut])
def list_deployments(
    project: str,
    principal: Annotated[Principal, require(Permission.DEPLOYMENTS_READ)],
    database: DatabaseDep,
) -> list[dict[str, Any]]:
    with database.read() as session:
        found = service.list_deployments(session, project=principal.require_project())
        return [service.describe(session, d) for d in found]


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
        return service.describe(session, found)


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
        return service.describe(unit.session, stopped)


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
        return service.describe(unit.session, changed)


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
        return service.describe(unit.session, changed)


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
