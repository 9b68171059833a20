"""Registered models and their versions (promotion: services/governance.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.errors import Conflict, NotAuthorized, NotFound
from bastion.server.caller import Identity
from bastion.server.db.models import (
    Model,
    ModelVersion,
    Project,
    Run,
)
from bastion.server.db.session import UnitOfWork
from bastion.server.services.evaluations import record_evaluations
from bastion.server.services.jobs import ACTIVE_STATUSES
from bastion.spec import RunSpec

__all__ = [
    "create_model",
    "get_model",
    "get_model_version",
    "in_production",
    "list_models",
    "list_versions",
    "record_model_version",
    "versions_by_model",
]


def get_model(session: Session, *, project: Project, name: str) -> Model:
    model = session.scalars(
        select(Model).where(Model.project_id == project.id, Model.name == name)
    ).first()
    if model is None:
        raise NotFound(f"model {name!r} does not exist in project {project.name!r}")
    return model


def create_model(unit: UnitOfWork, *, project: Project, name: str) -> Model:
    exists = unit.session.scalars(
        select(Model).where(Model.project_id == project.id, Model.name == name)
    ).first()
    if exists is not None:
        raise Conflict(f"model {name!r} already exists in project {project.name!r}")
    model = Model(project_id=project.id, name=name)
    unit.session.add(model)
    unit.record("model.create", f"model:{project.name}/{name}")
    return model


def record_model_version(
    unit: UnitOfWork,
    *,
    project: Project,
    name: str,
    caller: Identity,
    fields: dict[str, Any],
) -> ModelVersion:
    """Record the model version an agent sealed at the end of a training run.

    (1) The run must exist in this project and be leased by this agent.
    (2) It must be a training run that registers this model.
    (3) One run makes one version: a repeated report returns the recorded one.

    The evaluate stage's summaries (``evidence["evaluation"]``) are stored as the
    version's first evaluations.
    """
    run = unit.session.get(Run, fields["run_id"])
    # (1) ...
    if run is None or run.project_id != project.id:
        raise NotFound(f"run {fields['run_id']} does not exist in project {project.name!r}")
    if run.leased_by != caller.user_id:
        raise NotAuthorized("only the agent holding the run's lease records its model version")
    # (2) ...
    job = RunSpec.model_validate(run.spec).job
    if job.type not in ("train", "import-model", "federated") or job.model_name != name:
        raise Conflict(f"run {run.id} does not train or import model {name!r}")
    # (3) ...
    existing = unit.session.scalars(
        select(ModelVersion).where(ModelVersion.run_id == run.id)
    ).first()
    if existing is not None:
        return existing
    if run.status not in ACTIVE_STATUSES:
        raise Conflict(f"run {run.id} is {run.status}; it can no longer record a version")
    model = unit.session.scalars(
        select(Model).where(Model.project_id == project.id, Model.name == name)
    ).first()
    if model is None:
        model = create_model(unit, project=project, name=name)
        unit.session.flush()
    latest = unit.session.scalar(
        select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id)
    )
    evidence = dict(fields["evidence"])
    evaluations = evidence.pop("evaluation", None)
    version = ModelVersion(
        model_id=model.id,
        version=(latest or 0) + 1,
        run_id=run.id,
        evidence=evidence,
        manifest_hash=fields["manifest_hash"],
        signature=fields["signature"],
        cluster_id=run.cluster_id,
        created_by=run.created_by,
    )
    unit.session.add(version)
    unit.session.flush()
    unit.record(
        "model.version.create",
        f"model:{project.name}/{name}@{version.version}",
        {"run": run.id, "manifest_hash": version.manifest_hash},
    )
    if evaluations:
        record_evaluations(
            unit,
            project=project,
            version=version,
            reference=f"{name}@{version.version}",
            run=run,
            results=evaluations,
        )
    return version


def get_model_version(
    session: Session, *, project: Project, name: str, version: int
) -> ModelVersion:
    model = get_model(session, project=project, name=name)
    found = session.scalars(
        select(ModelVersion).where(
            ModelVersion.model_id == model.id, ModelVersion.version == version
        )
    ).first()
    if found is None:
        raise NotFound(f"model {name!r} has no version {version}")
    return found


def list_models(session: Session, *, project: Project) -> list[Model]:
    query = select(Model).where(Model.project_id == project.id)
    return list(session.scalars(query.order_by(Model.name)))


def list_versions(session: Session, *, project: Project, name: str) -> list[ModelVersion]:
    model = get_model(session, project=project, name=name)
    query = select(ModelVersion).where(ModelVersion.model_id == model.id)
    return list(session.scalars(query.order_by(ModelVersion.version)))


def versions_by_model(
    session: Session, *, project: Project
) -> list[tuple[str, ModelVersion | None]]:
    """Every model with each of its versions, newest first; a model without versions once,
    with ``None`` (one query)."""
    rows = session.execute(
        select(Model.name, ModelVersion)
        .outerjoin(ModelVersion, ModelVersion.model_id == Model.id)
        .where(Model.project_id == project.id)
        .order_by(Model.name, ModelVersion.version.desc())
    ).all()
    return [(name, row) for name, row in rows]


def in_production(session: Session, *, project: Project) -> list[tuple[str, ModelVersion]]:
    """The versions at stage ``production``, by model name."""
    rows = session.execute(
        select(Model.name, ModelVersion)
        .join(ModelVersion, ModelVersion.model_id == Model.id)
        .where(Model.project_id == project.id, ModelVersion.stage == "production")
        .order_by(Model.name)
    ).all()
    return [(name, row) for name, row in rows]
