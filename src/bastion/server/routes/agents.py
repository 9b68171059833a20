"""The one agent route reachable without a bearer token: join, authenticated by the join token."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from bastion.api.clusters import JoinIn, JoinOut
from bastion.server.deps import DatabaseDep
from bastion.server.services import agents as service

__all__ = ["router"]

router = APIRouter(tags=["agents"])


@router.post("/api/v1/agents/join", response_model=JoinOut, status_code=status.HTTP_201_CREATED)
def join(body: JoinIn, request: Request, database: DatabaseDep) -> JoinOut:
    """Exchange a cluster's one-time join token for the agent's credential; publish its keys."""
    throttle = request.app.state.login_throttle
    address = request.client.host if request.client else "unknown"
    throttle.check(account=f"cluster:{body.cluster}", address=address)
    try:
        with database.write(actor=f"agent:{body.cluster}") as unit:
            cluster, token = service.join(
                unit,
                cluster=body.cluster,
                join_token=body.join_token,
                signing_public_key=body.signing_public_key,
                hybrid_public_keyset=body.hybrid_public_keyset,
            )
    except Exception:
        throttle.failed(account=f"cluster:{body.cluster}", address=address)
        raise
    return JoinOut(cluster=cluster.name, token=token)
