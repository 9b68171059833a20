"""Deployments: which model version a cluster serves, and the keys its clients hold.

A deployment is a record plus a ``serve`` run that the cluster's agent executes; the
server process (in the compute plane) fetches its key records and sends its audit
events and findings back through that run's job token.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.errors import Conflict, InvalidInput, NotFound, PolicyViolation
from bastion.inference.guards.auth import SERVING_KEY_PREFIX
from bastion.security.credentials import new_token
from bastion.server.caller import Identity
from bastion.server.db.models import (
    Cluster,
    Deployment,
    ModelVersion,
    Policy,
    Project,
    Run,
    RunEvent,
    ServingKey,
    utcnow,
)
from bastion.server.db.session import UnitOfWork
from bastion.server.services.alerts import raise_alert
from bastion.server.services.clusters import get_cluster
from bastion.server.services.datasets import job_inputs
from bastion.server.services.jobs import ACTIVE_STATUSES, create_run
from bastion.server.services.models import get_model_version
from bastion.server.services.runs import cancel_run, check_reporter, get_run
from bastion.spec import RunSpec, parse_dataset_ref

__all__ = [
    "create_deployment",
    "create_key",
    "describe",
    "desired_models",
    "get_deployment",
    "ingest_audit",
    "key_records",
    "list_deployments",
    "list_keys",
    "revoke_key",
    "rollback_deployment",
    "stop_deployment",
    "update_deployment",
]

#: A serve run's resources: it runs until stopped (the agent does not time it out).
_SERVE_TIMEOUT = 7 * 24 * 3600


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


def describe(session: Session, deployment: Deployment) -> dict[str, Any]:
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


def get_deployment(session: Session, *, project: Project, name: str) -> Deployment:
    found = session.scalars(
        select(Deployment).where(Deployment.project_id == project.id, Deployment.name == name)
    ).first()
    if found is None:
        raise NotFound(f"no deployment {name!r} in project {project.name!r}")
    return found


def list_deployments(session: Session, *, project: Project) -> list[Deployment]:
    return list(
        session.scalars(
            select(Deployment)
            .where(Deployment.project_id == project.id)
            .order_by(Deployment.created_at)
        )
    )


def _is_production_project(session: Session, project: Project) -> bool:
    """A project with a policy named ``production`` ships to production."""
    return (
        session.scalars(
            select(Policy).where(Policy.project_id == project.id, Policy.name == "production")
        ).first()
        is not None
    )


def create_deployment(
    unit: UnitOfWork,
    *,
    project: Project,
    name: str,
    model: str,
    cluster: str,
    settings: dict[str, Any],
    allow_unapproved: bool,
    user_id: str,
) -> Deployment:
    """Queue the serve run of a production model version (or, audited, an unapproved one)."""
    session = unit.session
    if session.scalars(
        select(Deployment).where(Deployment.project_id == project.id, Deployment.name == name)
    ).first():
        raise Conflict(f"deployment {name!r} exists; use 'bastion deploy update' to change it")
    if int(settings.get("replicas", 1)) > 1 and not settings.get("redis_url"):
        raise InvalidInput(
            "replicas share their rate limits and quotas in Redis: give a Redis URL "
            "(--redis-url) for more than one replica"
        )
    target: Cluster = get_cluster(session, cluster)
    model_name, number = parse_dataset_ref(model)
    version = _deployable(
        session, project=project, model=model, cluster=target, allow_unapproved=allow_unapproved
    )
    deployment = Deployment(
        project_id=project.id,
        name=name,
        cluster_id=target.id,
        model_name=model_name,
        model_version=number,
        history=[],
        settings=settings,
        unapproved=version.stage != "production",
        created_by=user_id,
    )
    session.add(deployment)
    session.flush()
    _start(unit, project=project, deployment=deployment, cluster=target, user_id=user_id)
    unit.record(
        "deployment.created",
        f"deployment:{project.name}/{name}",
        {"model": model, "cluster": cluster, "unapproved": deployment.unapproved},
    )
    return deployment


def _deployable(
    session: Session, *, project: Project, model: str, cluster: Cluster, allow_unapproved: bool
) -> ModelVersion:
    """The version, if it may be served on ``cluster``; else the reason it may not."""
    name, number = parse_dataset_ref(model)
    version = get_model_version(session, project=project, name=name, version=number)
    # (1) Only production versions, unless explicitly allowed outside production projects.
    if version.stage != "production":
        if not allow_unapproved:
            raise PolicyViolation(
                f"{model} is in stage {version.stage!r}; only a production version can be "
                "deployed (promote it with 'bastion model promote', or pass --allow-unapproved "
                "outside production projects)"
            )
        if _is_production_project(session, project):
            raise PolicyViolation(
                f"project {project.name!r} has a production policy: --allow-unapproved is refused"
            )
    # (2) The version must be stored where it will be served.
    if version.cluster_id is not None and version.cluster_id != cluster.id:
        raise Conflict(
            f"{model} is stored on another cluster; export it to {cluster.name!r} first "
            "('bastion model export --to-cluster')"
        )
    # (3) Serving applies no data transform: a model trained on transformed rows would be
    #     served raw ones.
    if version.evidence.get("data_transform"):
        raise Conflict(
            f"{model} was trained with data.transform {version.evidence['data_transform']!r}; "
            "serving does not apply transforms yet, so it cannot be deployed"
        )
    return version


def _swap(
    unit: UnitOfWork, *, project: Project, deployment: Deployment, number: int, action: str
) -> Deployment:
    if deployment.stopped_at is not None:
        raise Conflict(f"deployment {deployment.name!r} is stopped; create it again")
    previous = f"{deployment.model_name}@{deployment.model_version}"
    # A running server has imported its model's code package; another package cannot be
    # swapped into the same process.
    served, wanted = (
        get_model_version(unit.session, project=project, name=deployment.model_name, version=n)
        for n in (deployment.model_version, number)
    )
    if served.evidence.get("code") != wanted.evidence.get("code"):
        raise Conflict(
            f"{previous} and {deployment.model_name}@{number} were built from different code "
            f"({served.evidence.get('code') or 'built-in'} and "
            f"{wanted.evidence.get('code') or 'built-in'}): a running server cannot swap "
            "between them; stop the deployment and create it again"
        )
    deployment.model_version = number
    unit.record(
        f"deployment.{action}",
        f"deployment:{project.name}/{deployment.name}",
        {"from": previous, "to": f"{deployment.model_name}@{number}"},
    )
    return deployment


def update_deployment(
    unit: UnitOfWork, *, project: Project, name: str, model: str, allow_unapproved: bool
) -> Deployment:
    """Hot-swap: the server verifies the new version, then swaps it in without a restart."""
    deployment = get_deployment(unit.session, project=project, name=name)
    model_name, number = parse_dataset_ref(model)
    if model_name != deployment.model_name:
        raise Conflict(
            f"deployment {name!r} serves model {deployment.model_name!r}; deploy {model_name!r} "
            "under its own name"
        )
    if number == deployment.model_version:
        raise Conflict(f"deployment {name!r} already serves {model}")
    cluster = unit.session.get(Cluster, deployment.cluster_id)
    if cluster is None:  # pragma: no cover - a foreign key
        raise NotFound("the deployment's cluster is gone")
    version = _deployable(
        unit.session,
        project=project,
        model=model,
        cluster=cluster,
        allow_unapproved=allow_unapproved,
    )
    deployment.history = [*deployment.history, deployment.model_version]
    deployment.unapproved = version.stage != "production"
    return _swap(unit, project=project, deployment=deployment, number=number, action="updated")


def rollback_deployment(unit: UnitOfWork, *, project: Project, name: str) -> Deployment:
    """Back to the version served before the last update (it was deployable then)."""
    deployment = get_deployment(unit.session, project=project, name=name)
    if not deployment.history:
        raise Conflict(f"deployment {name!r} has no earlier version to roll back to")
    *rest, number = deployment.history
    deployment.history = rest
    return _swap(unit, project=project, deployment=deployment, number=number, action="rolled_back")


def desired_models(session: Session, *, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    """For each serve run of these, the model (and its training data) it should serve."""
    if not run_ids:
        return {}
    found: dict[str, dict[str, Any]] = {}
    wanted = set(run_ids)
    for deployment in session.scalars(select(Deployment).where(Deployment.stopped_at.is_(None))):
        runs = wanted.intersection(deployment.replica_runs)
        project = session.get(Project, deployment.project_id)
        if not runs or project is None:
            continue
        job = {"type": "serve", "model": f"{deployment.model_name}@{deployment.model_version}"}
        inputs = job_inputs(session, job=job, project=project, cluster_id=deployment.cluster_id)
        found.update(dict.fromkeys(runs, inputs))
    return found


def _start(
    unit: UnitOfWork, *, project: Project, deployment: Deployment, cluster: Cluster, user_id: str
) -> None:
    """One serve run per replica; they share the address (SO_REUSEPORT) and Redis."""
    runs = [
        _start_replica(
            unit,
            project=project,
            deployment=deployment,
            cluster=cluster,
            user_id=user_id,
            replica=i,
        )
        for i in range(int(str(deployment.settings.get("replicas", 1))))
    ]
    deployment.run_id = runs[0].id
    deployment.replica_runs = [run.id for run in runs]


def _start_replica(
    unit: UnitOfWork,
    *,
    project: Project,
    deployment: Deployment,
    cluster: Cluster,
    user_id: str,
    replica: int,
) -> Run:
    spec = RunSpec.model_validate(
        {
            "name": f"serve-{deployment.name}-{replica + 1}",
            "project": project.name,
            "cluster": cluster.name,
            "max_retries": 3,
            "resources": {"timeout_seconds": _SERVE_TIMEOUT},
            "job": {
                "type": "serve",
                "deployment": deployment.name,
                "model": f"{deployment.model_name}@{deployment.model_version}",
                **deployment.settings,
            },
        }
    )
    return create_run(unit, project=project, spec=spec, user_id=user_id, routed=True)


def stop_deployment(unit: UnitOfWork, *, project: Project, name: str) -> Deployment:
    deployment = get_deployment(unit.session, project=project, name=name)
    if deployment.stopped_at is not None:
        raise Conflict(f"deployment {name!r} is already stopped")
    for run_id in deployment.replica_runs:
        run = get_run(unit.session, project=project, run_id=run_id)
        if run.status in (*ACTIVE_STATUSES, "queued"):
            cancel_run(unit, project=project, run_id=run.id)
    deployment.stopped_at = utcnow()
    unit.record("deployment.stopped", f"deployment:{project.name}/{name}", {})
    return deployment


# -- serving keys --------------------------------------------------------------------------


def create_key(
    unit: UnitOfWork,
    *,
    project: Project,
    deployment: str,
    scopes: list[str],
    rate: float | None,
    burst: int | None,
    quota: int | None,
    expires_in: dt.timedelta | None,
    name: str,
    user_id: str,
) -> tuple[ServingKey, str]:
    """Mint a key; the token is returned once and only its hash is kept."""
    target = get_deployment(unit.session, project=project, name=deployment)
    minted = new_token(SERVING_KEY_PREFIX)
    key = ServingKey(
        id=minted.id,
        deployment_id=target.id,
        name=name,
        secret_hash=minted.secret_hash,
        scopes=sorted(set(scopes)),
        rate=rate,
        burst=burst,
        quota=quota,
        expires_at=utcnow() + expires_in if expires_in else None,
        created_by=user_id,
    )
    unit.session.add(key)
    unit.record(
        "serving_key.created",
        f"deployment:{project.name}/{deployment}",
        {"key": minted.id, "scopes": key.scopes},
    )
    return key, minted.token


def list_keys(session: Session, *, project: Project, deployment: str) -> list[ServingKey]:
    target = get_deployment(session, project=project, name=deployment)
    return list(
        session.scalars(
            select(ServingKey)
            .where(ServingKey.deployment_id == target.id)
            .order_by(ServingKey.created_at)
        )
    )


def revoke_key(unit: UnitOfWork, *, project: Project, deployment: str, key_id: str) -> ServingKey:
    target = get_deployment(unit.session, project=project, name=deployment)
    key = unit.session.get(ServingKey, key_id)
    if key is None or key.deployment_id != target.id:
        raise NotFound(f"deployment {deployment!r} has no serving key {key_id!r}")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        unit.record(
            "serving_key.revoked", f"deployment:{project.name}/{deployment}", {"key": key_id}
        )
    return key


# -- the serve job's side ------------------------------------------------------------------


def _served_by(session: Session, *, project: Project, run_id: str, caller: Identity) -> Deployment:
    run = get_run(session, project=project, run_id=run_id)
    check_reporter(caller=caller, run=run)  # the current attempt's job only
    for deployment in session.scalars(
        select(Deployment).where(Deployment.project_id == project.id)
    ):
        if run.id in deployment.replica_runs:
            return deployment
    raise NotFound(f"run {run_id} serves no deployment")


def key_records(
    session: Session, *, project: Project, run_id: str, caller: Identity
) -> list[dict[str, Any]]:
    """What the server needs to check its keys (hashes, never secrets)."""
    deployment = _served_by(session, project=project, run_id=run_id, caller=caller)
    keys = session.scalars(select(ServingKey).where(ServingKey.deployment_id == deployment.id))
    return [
        {
            "id": key.id,
            "secret_hash": key.secret_hash,
            "scopes": key.scopes,
            "rate": key.rate,
            "burst": key.burst,
            "quota": key.quota,
            "expires_at": key.expires_at.isoformat() if key.expires_at else None,
            "revoked": key.revoked_at is not None,
            "owner": key.created_by,
        }
        for key in keys
    ]


#: What a request event may carry into the audit log (no inputs, no outputs).
_EVENT_FIELDS = (
    "endpoint",
    "key_id",
    "input_sha256",
    "decision",
    "status",
    "flags",
    "instances",
    "model",
    "at",
)


def ingest_audit(
    unit: UnitOfWork,
    *,
    project: Project,
    run_id: str,
    events: list[dict[str, Any]],
    findings: list[dict[str, Any]],
    caller: Identity,
) -> int:
    """Append the server's request events to the audit log; findings become alerts."""
    deployment = _served_by(unit.session, project=project, run_id=run_id, caller=caller)
    target = f"deployment:{project.name}/{deployment.name}"
    for event in events:
        details = {k: event[k] for k in _EVENT_FIELDS if event.get(k) is not None}
        details["flags"] = [str(f) for f in details.get("flags", [])]
        details["status"] = str(details.get("status", ""))
        details["instances"] = str(details.get("instances", ""))
        unit.record("serve.request", target, details)
    for finding in findings:
        kind = str(finding.get("kind", "finding"))
        subject = str(finding.get("key_id") or finding.get("feature") or deployment.name)
        raise_alert(
            unit,
            kind=f"serve_{kind}",
            actor=subject,
            project=project.name,
            details={"deployment": deployment.name, **{k: str(v) for k, v in finding.items()}},
        )
    return len(events)
