"""Compute planes (clusters): registration and their one-time join tokens."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.errors import Conflict, NotFound
from bastion.security.credentials import new_token
from bastion.server.db.models import (
    Cluster,
    ClusterJoinToken,
    utcnow,
)
from bastion.server.db.session import UnitOfWork

__all__ = ["JOIN_TOKEN_KIND", "create_cluster", "get_cluster", "list_clusters", "new_join_token"]


JOIN_TOKEN_KIND = "bstjoin"  # noqa: S105 - a label, not a secret


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
    token = _mint(unit, cluster, hours=join_token_hours)
    unit.record("cluster.create", f"cluster:{name}", {"join_token_hours": join_token_hours})
    return cluster, token


def _mint(unit: UnitOfWork, cluster: Cluster, *, hours: int) -> str:
    minted = new_token(JOIN_TOKEN_KIND)
    unit.session.add(
        ClusterJoinToken(
            id=minted.id,
            cluster_id=cluster.id,
            secret_hash=minted.secret_hash,
            expires_at=utcnow() + dt.timedelta(hours=hours),
        )
    )
    return minted.token


def new_join_token(unit: UnitOfWork, *, name: str, hours: int) -> str:
    """A fresh one-time join token for an existing cluster: for an agent that never joined,
    or one that must join again (a new host, lost credentials). The agent that joins with
    it replaces the cluster's keys; tokens issued before stay valid until used or expired."""
    cluster = get_cluster(unit.session, name)
    token = _mint(unit, cluster, hours=hours)
    unit.record("cluster.join_token", f"cluster:{name}", {"join_token_hours": hours})
    return token


def list_clusters(session: Session) -> list[Cluster]:
    return list(session.scalars(select(Cluster).order_by(Cluster.name)))
