"""GDPR erasure (Art. 17): a data subject's rows out of every dataset version that holds them.

The control plane never keeps the subject id: it stores a keyed pseudonym (HMAC with its own
pseudonym key) and hands the id to each cluster sealed to that cluster's HPKE public key. One
``erase`` run per dataset version with a subject-id column searches it in the compute plane
(raw and pseudonymised columns alike); where rows are found the agent seals a new version
without them and shreds the old version's data keys unless a retention hold applies. Model
versions trained on an affected version are flagged with a retrain recommendation. Every step
is audited.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.errors import Conflict, InvalidInput, NotFound
from bastion.security.keys import Keyring
from bastion.security.transfer import seal_for_cluster
from bastion.server.db.models import (
    Cluster,
    Dataset,
    DatasetVersion,
    ErasureRequest,
    Model,
    ModelVersion,
    Project,
    Run,
    User,
)
from bastion.server.db.session import UnitOfWork
from bastion.server.services import lineage
from bastion.server.services.datasets import get_version, submit_job

__all__ = [
    "erasure_register",
    "erasure_view",
    "get_erasure",
    "request_erasure",
    "set_hold",
    "subject_pseudonym",
]

PURPOSE = "erasure"


def subject_pseudonym(keyring: Keyring, subject_id: str) -> str:
    """The control plane's keyed pseudonym of a subject id (what it stores instead)."""
    digest: bytes = keyring.pseudonym_prf().compute(subject_id.strip().encode(), 16)
    return "subj_" + digest.hex()


def request_erasure(
    unit: UnitOfWork,
    *,
    project: Project,
    subject_id: str,
    reason: str,
    user_id: str,
    keyring: Keyring,
    locate: bool = False,
) -> ErasureRequest:
    """Queue an ``erase`` run on every live dataset version that names its subject column
    (with ``locate``, runs that only count the subject's rows: where the subject is)."""
    subject = subject_id.strip()
    if not subject:
        raise InvalidInput("subject_id: give the data subject's id as the datasets hold it")
    if not reason.strip():
        raise InvalidInput("reason: give the request's reason (e.g. the data subject's request)")
    versions = unit.session.execute(
        select(Dataset, DatasetVersion)
        .join(DatasetVersion, DatasetVersion.dataset_id == Dataset.id)
        .where(
            Dataset.project_id == project.id,
            DatasetVersion.subject_id_column.is_not(None),
            DatasetVersion.shredded_at.is_(None),
        )
        .order_by(Dataset.name, DatasetVersion.version)
    ).all()
    if not versions:
        raise Conflict(
            f"no dataset version in project {project.name!r} names a subject-id column; "
            "register datasets with --subject-id-column so subjects can be found"
        )
    pseudonym = subject_pseudonym(keyring, subject)
    request = ErasureRequest(
        project_id=project.id,
        subject_pseudonym=pseudonym,
        mode="locate" if locate else "erase",
        reason=reason,
        requested_by=user_id,
    )
    unit.session.add(request)
    unit.session.flush()
    run_ids, refs = [], []
    for dataset, version in versions:
        cluster = unit.session.get(Cluster, version.cluster_id) if version.cluster_id else None
        if cluster is None or not cluster.hybrid_public_keyset:
            raise Conflict(f"{dataset.name}@{version.version} is on no cluster with an agent")
        ref = f"{dataset.name}@{version.version}"
        sealed = seal_for_cluster(
            subject.encode(),
            purpose=PURPOSE,
            recipient=cluster.name,
            recipient_keyset=cluster.hybrid_public_keyset,
        )
        run = submit_job(
            unit,
            project=project,
            name=dataset.name,
            user_id=user_id,
            job={
                "type": "erase",
                "dataset": ref,
                "erasure": request.id,
                "subject": sealed,
                "locate": locate,
            },
        )
        run_ids.append(run.id)
        refs.append(ref)
    request.run_ids = run_ids
    unit.record(
        f"privacy.{request.mode}.request",
        f"erasure:{request.id}",
        {"subject": pseudonym, "reason": reason[:500], "versions": refs},
    )
    return request


def get_erasure(session: Session, *, project: Project, erasure_id: str) -> ErasureRequest:
    found = session.get(ErasureRequest, erasure_id)
    if found is None or found.project_id != project.id:
        raise NotFound(f"erasure request {erasure_id} does not exist in project {project.name!r}")
    return found


def erasure_register(
    session: Session, *, project: Project, limit: int = 200
) -> list[dict[str, Any]]:
    """The project's erasure and locate requests, newest first, as :func:`erasure_view`
    shows each: its register of them (the API and the dashboard list the same)."""
    found = session.scalars(
        select(ErasureRequest)
        .where(ErasureRequest.project_id == project.id)
        .order_by(ErasureRequest.created_at.desc(), ErasureRequest.id.desc())
        .limit(limit)
    )
    return [erasure_view(session, request) for request in found]


def erasure_view(session: Session, request: ErasureRequest) -> dict[str, Any]:
    """The request with its overall status: running, completed, failed or no data found."""
    statuses = [
        run.status for run in session.scalars(select(Run).where(Run.id.in_(request.run_ids)))
    ]
    removed = sum(
        int(found.get("rows", 0)) for found in request.results.values() if isinstance(found, dict)
    )
    if any(status in ("failed", "cancelled") for status in statuses):
        status = "failed"
    elif statuses and all(status == "succeeded" for status in statuses):
        status = (
            ("found" if request.mode == "locate" else "completed") if removed else "no data found"
        )
    else:
        status = "running"
    held = [
        ref
        for ref, found in sorted(request.results.items())
        if isinstance(found, dict) and found.get("rows")
    ]
    project = session.get(Project, request.project_id)
    made_from = (
        lineage.downstream(session, project=project, roots=[f"dataset:{ref}" for ref in held])
        if project is not None
        else {}
    )
    downstream = {root.removeprefix("dataset:"): found for root, found in made_from.items()}
    flagged = [
        f"{name}@{version.version}"
        for name, version in session.execute(
            select(Model.name, ModelVersion)
            .join(ModelVersion, ModelVersion.model_id == Model.id)
            .where(Model.project_id == request.project_id)
            .order_by(Model.name, ModelVersion.version)
        ).all()
        if _flagged_by(version, request.id)
    ]
    requester = session.get(User, request.requested_by)
    return {
        "id": request.id,
        "mode": request.mode,
        "subject": request.subject_pseudonym,
        "models_flagged": flagged,
        "downstream": downstream,
        "reason": request.reason,
        "requested_by": requester.username if requester else "",
        "status": status,
        "runs": request.run_ids,
        "rows_removed": removed,
        "results": request.results,
        "created_at": request.created_at,
    }


def _flagged_by(version: ModelVersion, erasure_id: str) -> bool:
    flag = version.flags.get("trained_on_erased_data")
    return isinstance(flag, dict) and flag.get("erasure") == erasure_id


def set_hold(
    unit: UnitOfWork, *, project: Project, name: str, version: int, reason: str
) -> DatasetVersion:
    """Set (or, with an empty reason, release) a retention hold: erasure will not shred it."""
    row = get_version(unit.session, project=project, name=name, version=version)
    row.retention_hold = reason
    unit.record(
        "dataset.retention_hold",
        f"dataset:{project.name}/{name}@{version}",
        {"hold": bool(reason), "reason": reason[:500]},
    )
    return row
