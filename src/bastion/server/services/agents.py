"""The agent protocol: join, heartbeat, leases with fencing, and lease expiry.

A run's ``attempt`` is its fencing token: each lease increments it and mints a job
token bound to ``run:<id>:<attempt>``. Reports carrying an older attempt are
refused, so a stale process (an agent that lost its lease) cannot overwrite a
newer attempt's progress.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from bastion.errors import NotAuthenticated, NotAuthorized
from bastion.security.credentials import new_token, parse_token, secrets_match
from bastion.server.caller import Identity
from bastion.server.db.models import (
    ApiToken,
    Cluster,
    ClusterJoinToken,
    Project,
    Run,
    RunEvent,
    User,
    utcnow,
)
from bastion.server.db.session import UnitOfWork
from bastion.server.services.clusters import JOIN_TOKEN_KIND, get_cluster
from bastion.server.services.code import code_inputs
from bastion.server.services.datasets import lease_inputs
from bastion.server.services.federated import federation_inputs
from bastion.server.services.jobs import ACTIVE_STATUSES
from bastion.server.services.placement import need_of, shortfall

__all__ = [
    "HEARTBEAT_ACTIONS",
    "LEASE_SECONDS",
    "Lease",
    "expire_leases",
    "heartbeat",
    "join",
    "lease_next",
]

#: How long a lease lives without a heartbeat renewing it (``BASTION_LEASE_SECONDS``).
LEASE_SECONDS = 30
#: An agent is "live" if it heartbeated this recently.
LIVE_SECONDS = 30
#: The audit events of agents' liveness, which heartbeats write: an agent connecting after
#: a silence, and leaving; ``cluster.heartbeat`` is the one-per-beat event that chains
#: written by earlier releases hold. The dashboard's audit page hides them unless asked.
HEARTBEAT_ACTIONS = ("cluster.connected", "cluster.disconnected", "cluster.heartbeat")


@dataclass(frozen=True)
class Lease:
    run_id: str
    project: str
    attempt: int
    spec: dict[str, Any]
    job_token: str
    lease_seconds: int
    resume_from: int | None
    inputs: dict[str, Any]


def join(
    unit: UnitOfWork,
    *,
    cluster: str,
    join_token: str,
    signing_public_key: str,
    hybrid_public_keyset: str,
) -> tuple[Cluster, str]:
    """Exchange a one-time join token for the cluster agent's own credential."""
    refused = NotAuthenticated("invalid, used or expired join token")
    parsed = parse_token(join_token, kind=JOIN_TOKEN_KIND)
    if parsed is None:
        raise refused
    token_id, secret = parsed
    session = unit.session
    row = session.get(ClusterJoinToken, token_id)
    found = session.scalars(select(Cluster).where(Cluster.name == cluster)).first()
    # (1) the token exists and matches, (2) it belongs to this cluster, (3) unused and live.
    if row is None or found is None or not secrets_match(secret, row.secret_hash):
        raise refused
    expires = row.expires_at
    if row.cluster_id != found.id or row.used_at is not None or expires <= utcnow():
        raise refused
    row.used_at = utcnow()
    username = f"agent-{cluster}"
    agent = session.scalars(select(User).where(User.username == username)).first()
    if agent is None:
        agent = User(username=username, kind="agent")
        session.add(agent)
        session.flush()
    found.agent_user_id = agent.id
    found.signing_public_key = signing_public_key
    found.hybrid_public_keyset = hybrid_public_keyset
    found.last_heartbeat = utcnow()
    minted = new_token()
    session.add(
        ApiToken(
            id=minted.id,
            user_id=agent.id,
            name=f"agent of {cluster}",
            secret_hash=minted.secret_hash,
            scopes=["*"],
        )
    )
    unit.actor = f"agent:{username}"
    unit.record("cluster.join", f"cluster:{cluster}", {"agent": username})
    return found, minted.token


def _own_cluster(unit: UnitOfWork, *, caller: Identity, name: str) -> Cluster:
    cluster = get_cluster(unit.session, name)
    if cluster.agent_user_id != caller.user_id:
        raise NotAuthorized(f"this agent is not the agent of cluster {name!r}")
    return cluster


def expire_leases(unit: UnitOfWork) -> list[str]:
    """Re-queue (or fail, when retries are spent) runs whose lease ran out."""
    now = utcnow()
    expired = unit.session.scalars(
        select(Run).where(Run.status.in_(ACTIVE_STATUSES), Run.lease_expires_at < now)
    ).all()
    for run in expired:
        retries_used = run.attempt - 1
        if retries_used < run.max_retries:
            run.status, run.status_reason = (
                "queued",
                f"attempt {run.attempt} lost its agent; retrying",
            )
        else:
            run.status, run.status_reason = (
                "failed",
                f"attempt {run.attempt} lost its agent; no retries left",
            )
        run.leased_by, run.lease_expires_at, run.updated_at = None, None, now
        unit.record(
            "run.lease_expired", f"run:{run.id}", {"attempt": run.attempt, "status": run.status}
        )
    return [run.id for run in expired]


def heartbeat(
    unit: UnitOfWork,
    *,
    caller: Identity,
    name: str,
    active: dict[str, int],
    lease_seconds: int = LEASE_SECONDS,
    stopping: bool = False,
    isolation: str | None = None,
    capacity: dict[str, Any] | None = None,
) -> tuple[Cluster, list[str]]:
    """Record liveness, renew the leases the agent still holds; return runs to stop.

    Liveness lives in the clusters table; the audit log records what changes: the agent
    connecting after a silence, runs it is told to stop, its leaving (``stopping``), and
    what its host advertises (``capacity``) when that differs from before.
    Each beat alone is no event (one every 5 s per agent drowned the log).
    """
    cluster = _own_cluster(unit, caller=caller, name=name)
    target = f"cluster:{name}"
    now = utcnow()
    _note(unit, cluster, "isolation", isolation)
    _note(unit, cluster, "capacity", capacity)
    if stopping:
        cluster.last_heartbeat = None  # not live from now on; its leases run out as usual
        unit.record("cluster.disconnected", target, {"active": len(active)})
        return cluster, []
    if not agent_is_live(cluster):
        silent = (now - cluster.last_heartbeat) if cluster.last_heartbeat else None
        details: dict[str, Any] = {"active": len(active)}
        if silent is not None:
            details["silent_seconds"] = int(silent.total_seconds())
        unit.record("cluster.connected", target, details)
    cluster.last_heartbeat = now
    stop: list[str] = []
    for run_id, attempt in active.items():
        run = unit.session.get(Run, run_id)
        if run is None or run.cluster_id != cluster.id or run.attempt != attempt:
            stop.append(run_id)  # unknown, foreign or fenced off: the agent must kill it
        elif run.status not in ACTIVE_STATUSES:
            stop.append(run_id)
        else:
            run.lease_expires_at = utcnow() + dt.timedelta(seconds=lease_seconds)
    expire_leases(unit)
    if stop:
        unit.record("cluster.stop_runs", target, {"runs": sorted(stop)})
    return cluster, stop


def _note(unit: UnitOfWork, cluster: Cluster, fact: str, value: Any) -> None:
    """Record what the cluster's agent says of itself (``isolation``: how it isolates jobs;
    ``capacity``: what its host has); audit a change (a sandbox turned off, a GPU lost)."""
    before = getattr(cluster, fact)
    if value is None or value == before:
        return
    unit.record(f"cluster.{fact}", f"cluster:{cluster.name}", {"before": before, "after": value})
    setattr(cluster, fact, value)


#: How many of a cluster's oldest queued runs a lease looks through for one that fits.
_LEASE_WINDOW = 100


def _next_fitting(unit: UnitOfWork, cluster: Cluster, *, free_gpus: int | None) -> Run | None:
    """The oldest queued run of the cluster its agent can hold (now, with ``free_gpus``);
    one that does not fit stays queued for an agent that can, and does not block the rest."""
    queued = unit.session.scalars(
        select(Run)
        .where(Run.cluster_id == cluster.id, Run.status == "queued")
        .order_by(Run.created_at)
        .limit(_LEASE_WINDOW)
        .with_for_update(skip_locked=True)
    ).all()
    for run in queued:
        need = need_of(run.spec)
        if shortfall(need, cluster.capacity, cluster=cluster.name, free_gpus=free_gpus) is None:
            return run
    return None


def lease_next(
    unit: UnitOfWork,
    *,
    caller: Identity,
    name: str,
    lease_seconds: int = LEASE_SECONDS,
    isolation: str | None = None,
    free_gpus: int | None = None,
) -> Lease | None:
    """Lease the oldest queued run of this cluster that its agent can hold, with a fresh
    job token.

    ``isolation`` is how the agent will run the attempt; a run keeps ``none`` once any of
    its attempts ran unsandboxed. ``free_gpus`` is how many GPUs the agent has not given to
    its running jobs (placement compares the run's resources with the capacity its agent
    advertised and with these)."""
    cluster = _own_cluster(unit, caller=caller, name=name)
    _note(unit, cluster, "isolation", isolation)
    expire_leases(unit)
    run = _next_fitting(unit, cluster, free_gpus=free_gpus)
    if run is None:
        return None
    run.attempt += 1
    if run.isolation != "none":
        run.isolation = isolation
    run.status, run.status_reason = "leased", f"leased by the agent of {name}"
    run.leased_by, run.updated_at = caller.user_id, utcnow()
    run.lease_expires_at = utcnow() + dt.timedelta(seconds=lease_seconds)
    job_user = _job_user(unit, cluster=name)
    minted = new_token()
    unit.session.add(
        ApiToken(
            id=minted.id,
            user_id=job_user.id,
            name=f"job {run.id} attempt {run.attempt}",
            secret_hash=minted.secret_hash,
            scopes=["runs:report", f"run:{run.id}:{run.attempt}"],
            expires_at=_token_expiry(run),
        )
    )
    project = unit.session.get(Project, run.project_id)
    checkpoint = _last_checkpoint(unit, run.id)
    inputs = lease_inputs(unit.session, run=run, project=project) if project else {}
    if project is not None:
        inputs.update(code_inputs(unit.session, run=run, project=project))
        inputs.update(federation_inputs(unit.session, run=run, project=project))
    if checkpoint is not None and checkpoint[1] is not None:
        inputs["checkpoint"] = {
            "name": run.id,
            "version": checkpoint[0],
            "manifest_hash": checkpoint[1],
        }
    unit.record(
        "run.leased",
        f"run:{run.id}",
        {"attempt": run.attempt, "cluster": name, "status": "leased", "isolation": isolation},
    )
    return Lease(
        run_id=run.id,
        project=project.name if project else "",
        attempt=run.attempt,
        spec=dict(run.spec),
        job_token=minted.token,
        lease_seconds=lease_seconds,
        resume_from=checkpoint[0] if checkpoint else None,
        inputs=inputs,
    )


def _token_expiry(run: Run) -> dt.datetime | None:
    """A job token outlives its job's timeout by an hour; an inference server's lasts as long
    as its run is active (the token is bound to the run and attempt, and refused after)."""
    job = run.spec.get("job")
    if isinstance(job, dict) and job.get("type") == "serve":
        return None
    return utcnow() + dt.timedelta(seconds=_timeout(run) + 3600)


def _timeout(run: Run) -> int:
    resources = run.spec.get("resources")
    value = resources.get("timeout_seconds", 3600) if isinstance(resources, dict) else 3600
    return int(value)


_CHECKPOINT = re.compile(r"^step (\d+)(?: sealed ([0-9a-f]{64}))?$")


def _last_checkpoint(unit: UnitOfWork, run_id: str) -> tuple[int, str | None] | None:
    """The last step a previous attempt checkpointed (and, when the agent sealed it, the
    sealed checkpoint's manifest hash), so the next attempt resumes there."""
    message = unit.session.scalars(
        select(RunEvent.message)
        .where(RunEvent.run_id == run_id, RunEvent.stage == "checkpoint")
        .order_by(RunEvent.id.desc())
        .limit(1)
    ).first()
    found = _CHECKPOINT.match(message or "")
    if found is None:
        return None
    return int(found.group(1)), found.group(2)


def _job_user(unit: UnitOfWork, *, cluster: str) -> User:
    username = f"jobs-{cluster}"
    user = unit.session.scalars(select(User).where(User.username == username)).first()
    if user is None:
        user = User(username=username, kind="job")
        unit.session.add(user)
        unit.session.flush()
    return user


def agent_is_live(cluster: Cluster) -> bool:
    if cluster.last_heartbeat is None:
        return False
    return utcnow() - cluster.last_heartbeat < dt.timedelta(seconds=LIVE_SECONDS)
