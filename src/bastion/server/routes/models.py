"""Registered models: versions, checks, export/import, evaluations and the model card
(promotion and policies: routes/governance.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, status
from fastapi.responses import HTMLResponse

from bastion.api.models import (
    EvaluateIn,
    EvaluationOut,
    ExportIn,
    ImportIn,
    ModelIn,
    ModelOut,
    ModelVersionIn,
    ModelVersionOut,
)
from bastion.api.runs import (
    RunOut,
)
from bastion.evaluate.card import render_html
from bastion.server.db.models import (
    Evaluation,
    Model,
    ModelVersion,
    Run,
)
from bastion.server.db.session import Database
from bastion.server.deps import DatabaseDep, NamePath, Principal, require
from bastion.server.permissions import Permission
from bastion.server.services import alerts, datasets, evaluations
from bastion.server.services import models as model_service

__all__ = ["router"]

router = APIRouter(tags=["models"])


#: The card page: its own inline styles and SVG, nothing else (no script at all).
CARD_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


@router.get("/projects/{project}/models", response_model=list[ModelOut])
def list_models(
    project: str,
    principal: Annotated[Principal, require(Permission.MODELS_READ)],
    database: DatabaseDep,
) -> list[Model]:
    with database.read() as session:
        return model_service.list_models(session, project=principal.require_project())


@router.post(
    "/projects/{project}/models", response_model=ModelOut, status_code=status.HTTP_201_CREATED
)
def create_model(
    project: str,
    body: ModelIn,
    principal: Annotated[Principal, require(Permission.MODELS_WRITE)],
    database: DatabaseDep,
) -> Model:
    with database.write(actor=principal.actor) as unit:
        return model_service.create_model(unit, project=principal.require_project(), name=body.name)


@router.get("/projects/{project}/models/{name}/versions", response_model=list[ModelVersionOut])
def list_model_versions(
    project: str,
    name: NamePath,
    principal: Annotated[Principal, require(Permission.MODELS_READ)],
    database: DatabaseDep,
) -> list[ModelVersion]:
    with database.read() as session:
        return model_service.list_versions(session, project=principal.require_project(), name=name)


@router.get("/projects/{project}/models/{name}/versions/{version}", response_model=ModelVersionOut)
def get_model_version(
    project: str,
    name: NamePath,
    version: Annotated[int, Path(ge=1, le=10**9)],
    principal: Annotated[Principal, require(Permission.MODELS_READ)],
    database: DatabaseDep,
) -> ModelVersion:
    with database.read() as session:
        return model_service.get_model_version(
            session, project=principal.require_project(), name=name, version=version
        )


@router.post(
    "/projects/{project}/models/{name}/versions/{version}/verify",
    response_model=RunOut,
    status_code=status.HTTP_201_CREATED,
)
def verify_model_version(
    project: str,
    name: NamePath,
    version: Annotated[int, Path(ge=1, le=10**9)],
    principal: Annotated[Principal, require(Permission.CHECKS_RUN)],
    database: DatabaseDep,
) -> Run:
    """Queue a check of the sealed model (signature, every file) on the cluster holding it."""
    with database.write(actor=principal.actor) as unit:
        return datasets.submit_job(
            unit,
            project=principal.require_project(),
            name=name,
            user_id=principal.identity.user_id,
            job={"type": "verify-model", "model": f"{name}@{version}"},
        )


@router.post(
    "/projects/{project}/models/{name}/versions/{version}/export",
    response_model=RunOut,
    status_code=status.HTTP_201_CREATED,
)
def export_model_version(
    project: str,
    name: NamePath,
    version: Annotated[int, Path(ge=1, le=10**9)],
    body: ExportIn,
    principal: Annotated[Principal, require(Permission.MODELS_WRITE)],
    database: DatabaseDep,
) -> Run:
    """Queue the re-encryption of a model to another cluster's public key (a transfer file)."""
    with database.write(actor=principal.actor) as unit:
        run = datasets.submit_job(
            unit,
            project=principal.require_project(),
            name=name,
            user_id=principal.identity.user_id,
            job={
                "type": "export-model",
                "model": f"{name}@{version}",
                "to_cluster": body.to_cluster,
            },
        )
        unit.session.flush()
        alerts.check_export_volume(
            unit, actor=principal.actor, user_id=principal.identity.user_id, project=project
        )
        return run


@router.post(
    "/projects/{project}/models/{name}/versions/{version}/evaluate",
    response_model=RunOut,
    status_code=status.HTTP_201_CREATED,
)
def evaluate_model_version(
    project: str,
    name: NamePath,
    version: Annotated[int, Path(ge=1, le=10**9)],
    body: EvaluateIn,
    principal: Annotated[Principal, require(Permission.MODELS_WRITE)],
    database: DatabaseDep,
) -> Run:
    """Queue an evaluation of a version on the cluster that holds it and its training data."""
    with database.write(actor=principal.actor) as unit:
        return datasets.submit_job(
            unit,
            project=principal.require_project(),
            name=name,
            user_id=principal.identity.user_id,
            job={
                "type": "evaluate",
                "model": f"{name}@{version}",
                "evaluate": body.evaluate.model_dump(mode="json", exclude_none=True),
            },
        )


@router.get(
    "/projects/{project}/models/{name}/versions/{version}/evaluations",
    response_model=list[EvaluationOut],
)
def list_model_evaluations(
    project: str,
    name: NamePath,
    version: Annotated[int, Path(ge=1, le=10**9)],
    principal: Annotated[Principal, require(Permission.MODELS_READ)],
    database: DatabaseDep,
) -> list[Evaluation]:
    """Every evaluation of the version, oldest first (the newest of each kind is current)."""
    with database.read() as session:
        row = model_service.get_model_version(
            session, project=principal.require_project(), name=name, version=version
        )
        return evaluations.list_evaluations(session, row)


def _card(principal: Principal, database: Database, name: str, version: int) -> dict[str, Any]:
    with database.read() as session:
        project = principal.require_project()
        row = model_service.get_model_version(session, project=project, name=name, version=version)
        return evaluations.model_card(session, project=project, name=name, row=row)


@router.get("/projects/{project}/models/{name}/versions/{version}/card")
def model_card(
    project: str,
    name: NamePath,
    version: Annotated[int, Path(ge=1, le=10**9)],
    principal: Annotated[Principal, require(Permission.MODELS_READ)],
    database: DatabaseDep,
) -> dict[str, Any]:
    """The model card as JSON, with the OWASP ML Top 10 scorecard."""
    return _card(principal, database, name, version)


@router.get(
    "/projects/{project}/models/{name}/versions/{version}/card.html",
    response_class=HTMLResponse,
)
def model_card_html(
    project: str,
    name: NamePath,
    version: Annotated[int, Path(ge=1, le=10**9)],
    principal: Annotated[Principal, require(Permission.MODELS_READ)],
    database: DatabaseDep,
) -> HTMLResponse:
    """The model card as one self-contained HTML page (plots inline as SVG, no script)."""
    page = render_html(_card(principal, database, name, version))
    return HTMLResponse(page, headers={"Content-Security-Policy": CARD_CSP})


@router.post("/projects/{project}/models/{name}/import", response_model=RunOut, status_code=201)
def import_model(
    project: str,
    name: NamePath,
    body: ImportIn,
    principal: Annotated[Principal, require(Permission.MODELS_WRITE)],
    database: DatabaseDep,
) -> Run:
    """Queue the import of a transfer file on the cluster it is addressed to."""
    with database.write(actor=principal.actor) as unit:
        return datasets.submit_job(
            unit,
            project=principal.require_project(),
            name=name,
            user_id=principal.identity.user_id,
            job={"type": "import-model", "source": body.source, "model_name": name},
            cluster=body.cluster,
        )


@router.post(
    "/projects/{project}/models/{name}/versions",
    response_model=ModelVersionOut,
    status_code=status.HTTP_201_CREATED,
)
def record_model_version(
    project: str,
    name: NamePath,
    body: ModelVersionIn,
    principal: Annotated[Principal, require(Permission.MODELS_RECORD)],
    database: DatabaseDep,
) -> ModelVersion:
    """The agent records the model version it sealed for a training run."""
    with database.write(actor=principal.actor) as unit:
        return model_service.record_model_version(
            unit,
            project=principal.require_project(),
            name=name,
            caller=principal.identity,
            fields=body.model_dump(),
        )
