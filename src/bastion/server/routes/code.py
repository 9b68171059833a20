"""Users' code packages: push, list, show, the agent's record, reviews."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, status

from bastion.api.code import (
    CodePackageOut,
    CodePushIn,
    CodeRecordIn,
    CodeReviewIn,
    CodeVersionOut,
)
from bastion.server.deps import DatabaseDep, NamePath, Principal, require
from bastion.server.permissions import Permission
from bastion.server.services import code as code_service

__all__ = ["router"]

router = APIRouter(tags=["code"])

Version = Annotated[int, Path(ge=1, le=10**9)]


@router.post(
    "/projects/{project}/code", response_model=CodeVersionOut, status_code=status.HTTP_201_CREATED
)
def push_code(
    project: str,
    body: CodePushIn,
    principal: Annotated[Principal, require(Permission.CODE_PUSH)],
    database: DatabaseDep,
) -> dict[str, Any]:
    """Record a pushed version (sealed to the cluster) and queue its registration there."""
    with database.write(actor=principal.actor) as unit:
        row = code_service.push(
            unit, project=principal.require_project(), caller=principal.identity, body=body
        )
        return code_service.describe(unit.session, row)


@router.get("/projects/{project}/code", response_model=list[CodePackageOut])
def list_code(
    project: str,
    principal: Annotated[Principal, require(Permission.CODE_READ)],
    database: DatabaseDep,
) -> list[dict[str, Any]]:
    with database.read() as session:
        return code_service.list_packages(session, project=principal.require_project())


@router.get("/projects/{project}/code/{name}/versions", response_model=list[CodeVersionOut])
def list_code_versions(
    project: str,
    name: NamePath,
    principal: Annotated[Principal, require(Permission.CODE_READ)],
    database: DatabaseDep,
) -> list[dict[str, Any]]:
    with database.read() as session:
        return code_service.list_versions(session, project=principal.require_project(), name=name)


@router.get("/projects/{project}/code/{name}/versions/{version}", response_model=CodeVersionOut)
def get_code_version(
    project: str,
    name: NamePath,
    version: Version,
    principal: Annotated[Principal, require(Permission.CODE_READ)],
    database: DatabaseDep,
) -> dict[str, Any]:
    with database.read() as session:
        row = code_service.get_version(
            session, project=principal.require_project(), name=name, version=version
        )
        return code_service.describe(session, row)


@router.post(
    "/projects/{project}/code/{name}/versions/{version}/record", response_model=CodeVersionOut
)
def record_code_version(
    project: str,
    name: NamePath,
    version: Version,
    body: CodeRecordIn,
    principal: Annotated[Principal, require(Permission.CODE_RECORD)],
    database: DatabaseDep,
) -> dict[str, Any]:
    """The agent records the version it unpacked, checked, sealed and signed."""
    with database.write(actor=principal.actor) as unit:
        row = code_service.record(
            unit,
            project=principal.require_project(),
            caller=principal.identity,
            name=name,
            version=version,
            body=body,
        )
        return code_service.describe(unit.session, row)


@router.post(
    "/projects/{project}/code/{name}/versions/{version}/reviews", response_model=CodeVersionOut
)
def review_code_version(
    project: str,
    name: NamePath,
    version: Version,
    body: CodeReviewIn,
    principal: Annotated[Principal, require(Permission.CODE_REVIEW)],
    database: DatabaseDep,
) -> dict[str, Any]:
    """A reviewer approves or rejects a registered version (not the person who pushed it)."""
    with database.write(actor=principal.actor) as unit:
        row = code_service.review(
            unit,
            project=principal.require_project(),
            caller=principal.identity,
            name=name,
            version=version,
            verdict=body.verdict,
            comment=body.comment,
        )
        return code_service.describe(unit.session, row)
