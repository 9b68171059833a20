"""Clusters and the agent protocol: register, heartbeat, long-poll lease."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from bastion.api.clusters import (
    ClusterIn,
    ClusterOut,
    HeartbeatIn,
    HeartbeatOut,
    Isolation,
    JoinTokenIn,
    JoinTokenOut,
    LeaseOut,
    NewClusterOut,
)
from bastion.server.db.models import (
    Cluster,
)
from bastion.server.db.session import Database
from bastion.server.deps import DatabaseDep, NamePath, Principal, require
from bastion.server.permissions import Permission
from bastion.server.services import agents, deployments
from bastion.server.services import clusters as cluster_service

__all__ = ["router"]

router = APIRouter(tags=["clusters"])


@router.get("/clusters", response_model=list[ClusterOut])
def list_clusters(
    _: Annotated[Principal, require(Permission.CLUSTERS_READ)], database: DatabaseDep
) -> list[Cluster]:
    with database.read() as session:
        return cluster_service.list_clusters(session)


@router.post("/clusters", response_model=NewClusterOut, status_code=status.HTTP_201_CREATED)
def create_cluster(
    body: ClusterIn,
    principal: Annotated[Principal, require(Permission.CLUSTERS_WRITE)],
    database: DatabaseDep,
) -> NewClusterOut:
    """Register a compute plane; the one-time join token is in this response only."""
    with database.write(actor=principal.actor) as unit:
        cluster, token = cluster_service.create_cluster(
            unit,
            name=body.name,
            description=body.description,
            join_token_hours=body.join_token_hours,
        )
    return NewClusterOut.model_validate(
        {**ClusterOut.model_validate(cluster).model_dump(), "join_token": token}
    )


@router.post(
    "/clusters/{name}/join-token", response_model=JoinTokenOut, status_code=status.HTTP_201_CREATED
)
def new_join_token(
    name: NamePath,
    body: JoinTokenIn,
    principal: Annotated[Principal, require(Permission.CLUSTERS_WRITE)],
    database: DatabaseDep,
) -> JoinTokenOut:
    """A new one-time join token for the cluster's agent; in this response only."""
    with database.write(actor=principal.actor) as unit:
        token = cluster_service.new_join_token(unit, name=name, hours=body.hours)
    return JoinTokenOut(cluster=name, join_token=token)


@router.get("/clusters/{name}", response_model=ClusterOut)
def get_cluster(
    name: str, _: Annotated[Principal, require(Permission.CLUSTERS_READ)], database: DatabaseDep
) -> Cluster:
    with database.read() as session:
        return cluster_service.get_cluster(session, name)


@router.post("/clusters/{name}/heartbeat", response_model=HeartbeatOut)
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
            isolation=body.isolation,
            capacity=None if body.capacity is None else body.capacity.model_dump(mode="json"),
        )
        serve = deployments.desired_models(unit.session, run_ids=sorted(set(body.runs) - set(stop)))
    return HeartbeatOut(stop=stop, serve=serve)


@router.post(
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
    isolation: Annotated[
        Isolation | None,
        Query(description="How the agent will run the job: bubblewrap or none (--no-sandbox)."),
    ] = None,
    free_gpus: Annotated[
        int | None,
        Query(ge=0, le=1024, description="GPUs the agent has not given to running jobs."),
    ] = None,
) -> Any:
    """Long-poll for the next queued run of this cluster; 204 when none arrived in time."""
    deadline = time.monotonic() + wait
    while True:
        # An agent that died mid-poll must not be handed a run it will never start.
        if await request.is_disconnected():
            return Response(status_code=status.HTTP_204_NO_CONTENT)
        seconds = request.app.state.settings.lease_seconds
        offered = await run_in_threadpool(
            _lease_once, database, principal, name, seconds, isolation, free_gpus
        )
        if offered is not None:
            return LeaseOut(**offered.__dict__)
        if time.monotonic() >= deadline:
            return Response(status_code=status.HTTP_204_NO_CONTENT)
        await asyncio.sleep(min(LEASE_POLL_SECONDS, max(0.0, deadline - time.monotonic())))


LEASE_POLL_SECONDS = 0.25


def _lease_once(
    database: Database,
    principal: Principal,
    name: str,
    lease_seconds: int,
    isolation: str | None,
    free_gpus: int | None,
) -> agents.Lease | None:
    with database.write(actor=principal.actor) as unit:
        return agents.lease_next(
            unit,
            caller=principal.identity,
            name=name,
            lease_seconds=lease_seconds,
            isolation=isolation,
            free_gpus=free_gpus,
        )
