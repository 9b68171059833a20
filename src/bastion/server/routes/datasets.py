"""Datasets: names, versions, schema edits, and the data jobs that run where the data is."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, status

from bastion.api.datasets import (
    DatasetIn,
    DatasetOut,
    DatasetVersionIn,
    DatasetVersionOut,
    PseudonymizeIn,
    RegisterIn,
    SchemaIn,
    VersionJobIn,
)
from bastion.api.runs import RunOut
from bastion.server.db.models import Dataset, Run
from bastion.server.deps import DatabaseDep, NamePath, Principal, require
from bastion.server.permissions import Permission
from bastion.server.services import datasets as service

__all__ = ["router"]

router = APIRouter(tags=["datasets"])

Version = Annotated[int, Path(ge=1, le=10**9)]
_BASE = "/projects/{project}/datasets"


@router.get(_BASE, response_model=list[DatasetOut])
def list_datasets(
    project: str,
    principal: Annotated[Principal, require(Permission.DATASETS_READ)],
    database: DatabaseDep,
) -> list[Dataset]:
    with database.read() as session:
        return service.list_datasets(session, project=principal.require_project())


@router.post(_BASE, response_model=DatasetOut, status_code=status.HTTP_201_CREATED)
def create_dataset(
    project: str,
    body: DatasetIn,
    principal: Annotated[Principal, require(Permission.DATASETS_WRITE)],
    database: DatabaseDep,
) -> Dataset:
    with database.write(actor=principal.actor) as unit:
        return service.create_dataset(unit, project=principal.require_project(), name=body.name)


@router.get(_BASE + "/{name}/versions", response_model=list[DatasetVersionOut])
def list_versions(
    project: str,
    name: NamePath,
    principal: Annotated[Principal, require(Permission.DATASETS_READ)],
    database: DatabaseDep,
) -> list[dict[str, Any]]:
    with database.read() as session:
        return service.list_versions(session, project=principal.require_project(), name=name)


@router.get(_BASE + "/{name}/versions/{version}", response_model=DatasetVersionOut)
def get_version(
    project: str,
    name: NamePath,
    version: Version,
    principal: Annotated[Principal, require(Permission.DATASETS_READ)],
    database: DatabaseDep,
) -> dict[str, Any]:
    with database.read() as session:
        row = service.get_version(
            session, project=principal.require_project(), name=name, version=version
        )
        return service.version_view(session, row)


@router.post(
    _BASE + "/{name}/versions",
    response_model=DatasetVersionOut,
    status_code=status.HTTP_201_CREATED,
)
def record_version(
    project: str,
    name: NamePath,
    body: DatasetVersionIn,
    principal: Annotated[Principal, require(Permission.DATASETS_RECORD)],
    database: DatabaseDep,
) -> dict[str, Any]:
    """The agent records the version it sealed for a registration or pseudonymisation run."""
    with database.write(actor=principal.actor) as unit:
        row = service.record_version(
            unit,
            project=principal.require_project(),
            name=name,
            caller=principal.identity,
            fields=body.model_dump(),
        )
        return service.version_view(unit.session, row)


@router.put(_BASE + "/{name}/versions/{version}/schema", response_model=DatasetVersionOut)
def edit_schema(
    project: str,
    name: NamePath,
    version: Version,
    body: SchemaIn,
    principal: Annotated[Principal, require(Permission.DATASETS_WRITE)],
    database: DatabaseDep,
) -> dict[str, Any]:
    """A data steward corrects the inferred schema (ranges, categories, nullability)."""
    with database.write(actor=principal.actor) as unit:
        row = service.edit_schema(
            unit,
            project=principal.require_project(),
            name=name,
            version=version,
            schema=body.schema_,
            user_id=principal.identity.user_id,
        )
        return service.version_view(unit.session, row)


# -- data jobs: each is a run on the cluster that holds the data ----------------------------


@router.post(_BASE + "/{name}/register", response_model=RunOut, status_code=201)
def register(
    project: str,
    name: NamePath,
    body: RegisterIn,
    principal: Annotated[Principal, require(Permission.DATASETS_WRITE)],
    database: DatabaseDep,
) -> Run:
    """Queue the registration of a file on the cluster's host as a new version."""
    job = {"type": "ingest", "dataset": name, **body.model_dump(exclude={"cluster"})}
    with database.write(actor=principal.actor) as unit:
        return service.submit_job(
            unit,
            project=principal.require_project(),
            name=name,
            user_id=principal.identity.user_id,
            job=job,
            cluster=body.cluster,
        )


@router.post(
    _BASE + "/{name}/versions/{version}/pseudonymize", response_model=RunOut, status_code=201
)
def pseudonymize(
    project: str,
    name: NamePath,
    version: Version,
    body: PseudonymizeIn,
    principal: Annotated[Principal, require(Permission.DATASETS_WRITE)],
    database: DatabaseDep,
) -> Run:
    """Queue a pseudonymisation that makes a new version of the dataset."""
    job = {"type": "pseudonymize", "dataset": f"{name}@{version}", **body.model_dump()}
    with database.write(actor=principal.actor) as unit:
        return service.submit_job(
            unit,
            project=principal.require_project(),
            name=name,
            user_id=principal.identity.user_id,
            job=job,
        )


def _queue_on_version(
    database: DatabaseDep, principal: Principal, *, name: str, version: int, kind: str
) -> Run:
    with database.write(actor=principal.actor) as unit:
        return service.submit_job(
            unit,
            project=principal.require_project(),
            name=name,
            user_id=principal.identity.user_id,
            job={"type": kind, "dataset": f"{name}@{version}"},
        )


@router.post(_BASE + "/{name}/versions/{version}/verify", response_model=RunOut, status_code=201)
def verify(
    project: str,
    name: NamePath,
    version: Version,
    body: VersionJobIn,
    principal: Annotated[Principal, require(Permission.CHECKS_RUN)],
    database: DatabaseDep,
) -> Run:
    """Queue a re-hash and signature check of a version where it is stored."""
    return _queue_on_version(database, principal, name=name, version=version, kind="verify")


@router.post(_BASE + "/{name}/versions/{version}/scan", response_model=RunOut, status_code=201)
def scan(
    project: str,
    name: NamePath,
    version: Version,
    body: VersionJobIn,
    principal: Annotated[Principal, require(Permission.CHECKS_RUN)],
    database: DatabaseDep,
) -> Run:
    """Queue a new PII and poisoning scan of a version where it is stored."""
    return _queue_on_version(database, principal, name=name, version=version, kind="scan")
