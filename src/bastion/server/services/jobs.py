"""Job submission: every run, whatever asked for it, is queued here for its cluster's agent."""

from __future__ import annotations

from bastion.errors import InvalidSpec
from bastion.server.db.models import (
    Project,
    Run,
)
from bastion.server.db.session import UnitOfWork
from bastion.server.services.clusters import get_cluster
from bastion.server.services.placement import check_submit
from bastion.spec import DATASET_JOB_TYPES, RunSpec

__all__ = ["ACTIVE_STATUSES", "create_run"]


#: A run whose attempt is executing: its lease can be renewed and its job may report.
ACTIVE_STATUSES = ("leased", "running")


def create_run(
    unit: UnitOfWork,
    *,
    project: Project,
    spec: RunSpec,
    user_id: str,
    data_job: bool = False,
    routed: bool = False,
) -> Run:
    """Queue a validated run spec for its cluster's agent.

    Dataset jobs come only through the dataset routes (``data_job=True``), which check
    the data steward's permissions and that the version lives on the run's cluster.
    """
    if spec.job.type in DATASET_JOB_TYPES and not data_job:
        raise InvalidSpec(
            f"job.type {spec.job.type!r} is queued by 'bastion data' verbs, not as a run spec"
        )
    if spec.job.type == "serve" and not routed:
        raise InvalidSpec(
            "job.type 'serve' is queued by 'bastion deploy create', not as a run spec"
        )
    if spec.job.type == "federated-site" and not routed:
        raise InvalidSpec(
            "job.type 'federated-site' is queued with its federated run, not as a run spec"
        )
    if spec.job.type == "register-code" and not routed:
        raise InvalidSpec(
            "job.type 'register-code' is queued by 'bastion code push', not as a run spec"
        )
    if spec.project != project.name:
        raise InvalidSpec(
            f"spec.project is {spec.project!r} but the run is submitted to project {project.name!r}"
        )
    cluster = get_cluster(unit.session, spec.cluster)
    stored = spec.model_dump(mode="json")
    check_submit(stored, cluster.capacity, cluster=cluster.name)
    reason = (
        f"waiting for the agent of cluster {cluster.name!r}"
        if cluster.last_heartbeat is not None
        else f"cluster {cluster.name!r} has no agent yet; start one with 'bastion agent start'"
    )
    run = Run(
        project_id=project.id,
        cluster_id=cluster.id,
        name=spec.name,
        spec=stored,
        max_retries=spec.max_retries,
        status_reason=reason,
        created_by=user_id,
    )
    unit.session.add(run)
    unit.session.flush()
    unit.record(
        "run.create",
        f"run:{run.id}",
        {"project": project.name, "name": spec.name, "cluster": cluster.name, "status": "queued"},
    )
    return run
