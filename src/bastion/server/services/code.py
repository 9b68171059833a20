"""Users' code packages: pushed sealed, registered by the cluster's agent, reviewed, staged.

The control plane keeps a version's file list and hashes and who pushed it; the archive
arrives sealed to the cluster's HPKE key and is relayed to that cluster's agent by a
``register-code`` run. The agent opens it, checks every file, seals and signs it, and
records the manifest: only then can a run name the version (``code: NAME@V``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.api.code import CodePushIn, CodeRecordIn
from bastion.errors import Conflict, InvalidInput, InvalidSpec, NotAuthorized, NotFound
from bastion.server.caller import Identity
from bastion.server.db.models import (
    Cluster,
    CodePackage,
    CodeReview,
    CodeVersion,
    Model,
    ModelVersion,
    Project,
    Run,
    User,
)
from bastion.server.db.session import UnitOfWork
from bastion.server.services.clusters import get_cluster
from bastion.server.services.jobs import ACTIVE_STATUSES, create_run
from bastion.spec import RunSpec, parse_dataset_ref

__all__ = [
    "code_inputs",
    "describe",
    "get_version",
    "list_packages",
    "list_versions",
    "push",
    "record",
    "registered",
    "review",
    "status_of",
]


def _package(session: Session, *, project: Project, name: str) -> CodePackage:
    found = session.scalars(
        select(CodePackage).where(CodePackage.project_id == project.id, CodePackage.name == name)
    ).first()
    if found is None:
        raise NotFound(f"no code package {name!r} in project {project.name!r}")
    return found


def get_version(session: Session, *, project: Project, name: str, version: int) -> CodeVersion:
    package = _package(session, project=project, name=name)
    found = session.scalars(
        select(CodeVersion).where(
            CodeVersion.package_id == package.id, CodeVersion.version == version
        )
    ).first()
    if found is None:
        raise NotFound(f"code {name}@{version} does not exist in project {project.name!r}")
    return found


def status_of(session: Session, row: CodeVersion) -> tuple[str, str]:
    """(status, reason): registered once the agent recorded it; else its register run's."""
    if row.manifest_hash is not None:
        return "registered", ""
    run = session.get(Run, row.run_id) if row.run_id else None
    if run is not None and run.status in ("failed", "cancelled"):
        return "refused", run.status_reason
    return "pending", run.status_reason if run is not None else ""


def describe(session: Session, row: CodeVersion) -> dict[str, Any]:
    """A version as the API shows it (CodeVersionOut's fields)."""
    package = session.get(CodePackage, row.package_id)
    cluster = session.get(Cluster, row.cluster_id)
    reviews = session.scalars(
        select(CodeReview)
        .where(CodeReview.code_version_id == row.id)
        .order_by(CodeReview.created_at)
    ).all()
    people = {row.pushed_by, *(r.reviewer_id for r in reviews)}
    names = dict(session.execute(select(User.id, User.username).where(User.id.in_(people))).all())
    status, reason = status_of(session, row)
    return {
        "name": package.name if package else "",
        "version": row.version,
        "cluster": cluster.name if cluster else "",
        "status": status,
        "status_reason": reason,
        "files": row.files,
        "archive_sha256": row.archive_sha256,
        "manifest_hash": row.manifest_hash,
        "pushed_by": names.get(row.pushed_by, ""),
        "run_id": row.run_id,
        "created_at": row.created_at,
        "reviews": [
            {
                "reviewer": names.get(r.reviewer_id, ""),
                "verdict": r.verdict,
                "comment": r.comment,
                "created_at": r.created_at,
            }
            for r in reviews
        ],
    }


def list_versions(session: Session, *, project: Project, name: str) -> list[dict[str, Any]]:
    package = _package(session, project=project, name=name)
    rows = session.scalars(
        select(CodeVersion)
        .where(CodeVersion.package_id == package.id)
        .order_by(CodeVersion.version)
    ).all()
    return [describe(session, row) for row in rows]


def list_packages(session: Session, *, project: Project) -> list[dict[str, Any]]:
    packages = session.scalars(
        select(CodePackage).where(CodePackage.project_id == project.id).order_by(CodePackage.name)
    ).all()
    listed = []
    for package in packages:
        rows = session.scalars(
            select(CodeVersion)
            .where(CodeVersion.package_id == package.id)
            .order_by(CodeVersion.version.desc())
        ).all()
        listed.append(
            {
                "name": package.name,
                "versions": len(rows),
                "latest": describe(session, rows[0]) if rows else None,
                "created_at": package.created_at,
            }
        )
    return listed


def push(unit: UnitOfWork, *, project: Project, caller: Identity, body: CodePushIn) -> CodeVersion:
    """Record a pushed version and queue its registration on the cluster's agent.

    (1) The cluster must have an agent that published its HPKE key (the archive is sealed
        to it; the control plane cannot check the seal, the agent does).
    (2) File paths must be unique.
    (3) The version number is the package's next.
    """
    # (1) ...
    cluster = get_cluster(unit.session, body.cluster)
    if not cluster.hybrid_public_keyset:
        raise Conflict(f"cluster {cluster.name!r} has no agent yet: nothing can open the package")
    # (2) ...
    paths = [f.path for f in body.files]
    if len(set(paths)) != len(paths):
        raise InvalidInput("files: a path is listed twice")
    # (3) ...
    package = unit.session.scalars(
        select(CodePackage).where(
            CodePackage.project_id == project.id, CodePackage.name == body.name
        )
    ).first()
    if package is None:
        package = CodePackage(project_id=project.id, name=body.name)
        unit.session.add(package)
        unit.session.flush()
    latest = unit.session.scalar(
        select(func.max(CodeVersion.version)).where(CodeVersion.package_id == package.id)
    )
    number = (latest or 0) + 1
    spec = RunSpec.model_validate(
        {
            "name": f"register code {body.name}@{number}",
            "project": project.name,
            "cluster": cluster.name,
            "job": {"type": "register-code", "name": body.name, "version": number},
            "resources": {"timeout_seconds": 600, "memory_mb": 2048},
        }
    )
    run = create_run(unit, project=project, spec=spec, user_id=caller.user_id, routed=True)
    row = CodeVersion(
        package_id=package.id,
        version=number,
        cluster_id=cluster.id,
        files=[f.model_dump() for f in sorted(body.files, key=lambda f: f.path)],
        archive_sha256=body.archive_sha256,
        sealed_archive=body.sealed,
        run_id=run.id,
        pushed_by=caller.user_id,
    )
    unit.session.add(row)
    unit.session.flush()
    unit.record(
        "code.push",
        f"code:{project.name}/{body.name}@{number}",
        {
            "cluster": cluster.name,
            "files": len(body.files),
            "bytes": sum(f.size for f in body.files),
            "archive_sha256": body.archive_sha256,
            "run": run.id,
        },
    )
    return row


def record(
    unit: UnitOfWork,
    *,
    project: Project,
    caller: Identity,
    name: str,
    version: int,
    body: CodeRecordIn,
) -> CodeVersion:
    """The agent records the version it checked and sealed.

    (1) The run must be this version's register run, leased by this agent and active.
    (2) What the agent unpacked must be exactly what was pushed: the same archive, the same
        files with the same hashes (else the version is refused, never registered).
    (3) Once: a repeated report returns the recorded version.
    """
    row = get_version(unit.session, project=project, name=name, version=version)
    run = unit.session.get(Run, body.run_id)
    # (1) ...
    if run is None or row.run_id != run.id:
        raise Conflict(f"run {body.run_id} is not the run registering code {name}@{version}")
    if run.leased_by != caller.user_id:
        raise NotAuthorized("only the agent holding the register run's lease records the code")
    # (3) ...
    if row.manifest_hash is not None:
        return row
    if run.status not in ACTIVE_STATUSES:
        raise Conflict(f"run {run.id} is {run.status}; it can no longer record code")
    # (2) ...
    pushed = {(str(f["path"]), str(f["sha256"]), int(str(f["size"]))) for f in row.files}
    found = {(f.path, f.sha256, f.size) for f in body.files}
    if body.archive_sha256 != row.archive_sha256 or pushed != found:
        differ = sorted({p for p, _, _ in pushed ^ found})[:5]
        raise Conflict(
            f"code {name}@{version}: what the agent unpacked differs from what was pushed "
            f"({', '.join(differ) or 'the archive'}); push it again"
        )
    row.manifest_hash, row.signature = body.manifest_hash, body.signature
    row.sealed_archive = None  # sealed in the compute plane now; nothing to relay any more
    unit.record(
        "code.register",
        f"code:{project.name}/{name}@{version}",
        {"run": run.id, "manifest_hash": body.manifest_hash, "files": len(body.files)},
    )
    return row


def review(
    unit: UnitOfWork,
    *,
    project: Project,
    caller: Identity,
    name: str,
    version: int,
    verdict: str,
    comment: str,
) -> CodeVersion:
    """A reviewer's verdict on a registered version; never by the person who pushed it."""
    row = get_version(unit.session, project=project, name=name, version=version)
    if row.manifest_hash is None:
        raise Conflict(f"code {name}@{version} is not registered yet; review it once it is")
    if row.pushed_by == caller.user_id:
        raise NotAuthorized(
            f"{caller.username} pushed code {name}@{version} and cannot review it "
            "(two-person rule); ask another reviewer"
        )
    unit.session.add(
        CodeReview(
            code_version_id=row.id, reviewer_id=caller.user_id, verdict=verdict, comment=comment
        )
    )
    unit.record(
        "code.review",
        f"code:{project.name}/{name}@{version}",
        {"verdict": verdict, "comment": comment[:200]},
    )
    return row


def registered(session: Session, *, project: Project, ref: str, cluster_id: str) -> CodeVersion:
    """The registered version a run names, held by the run's cluster; refused with the reason."""
    name, number = parse_dataset_ref(ref)
    try:
        row = get_version(session, project=project, name=name, version=number)
    except NotFound:
        raise InvalidSpec(
            f"code {ref} does not exist in project {project.name!r}; push it with "
            "'bastion code push'"
        ) from None
    status, reason = status_of(session, row)
    if status != "registered":
        raise InvalidSpec(f"code {ref} is {status}{f' ({reason})' if reason else ''}")
    if row.cluster_id != cluster_id:
        holder = session.get(Cluster, row.cluster_id)
        raise Conflict(
            f"code {ref} is registered on cluster {holder.name if holder else '?'!r}; push it "
            "to the run's cluster too"
        )
    return row


def _model_code(session: Session, *, project: Project, ref: str) -> str | None:
    """The code package a model version was trained with (from its evidence)."""
    name, number = parse_dataset_ref(ref)
    version = session.scalars(
        select(ModelVersion)
        .join(Model, Model.id == ModelVersion.model_id)
        .where(Model.project_id == project.id, Model.name == name, ModelVersion.version == number)
    ).first()
    code = version.evidence.get("code") if version is not None else None
    return code if isinstance(code, str) else None


def code_inputs(session: Session, *, run: Run, project: Project) -> dict[str, Any]:
    """What a leased run needs of code: the sealed upload to register, or the version to stage.

    A training run stages the version it names; an evaluation, a model check or an inference
    server stages the version its model was trained with.
    """
    job: dict[str, Any] = dict(run.spec.get("job") or {})  # type: ignore[call-overload]
    kind = job.get("type")
    if kind == "register-code":
        row = get_version(session, project=project, name=job["name"], version=int(job["version"]))
        if row.sealed_archive is None:
            return {}
        return {
            "code_upload": {
                "sealed": row.sealed_archive,
                "files": row.files,
                "archive_sha256": row.archive_sha256,
            }
        }
    ref = job.get("code") if kind == "train" else None
    if kind in ("evaluate", "serve", "verify-model") and job.get("model"):
        ref = _model_code(session, project=project, ref=str(job["model"]))
    if not ref or run.cluster_id is None:
        return {}
    row = registered(session, project=project, ref=str(ref), cluster_id=run.cluster_id)
    name, number = parse_dataset_ref(str(ref))
    return {"code": {"name": name, "version": number, "manifest_hash": row.manifest_hash}}
