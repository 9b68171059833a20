"""Projects and their members."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response, status

from bastion.api.projects import MembershipIn, MembershipOut, ProjectIn, ProjectOut
from bastion.server.db.models import Project
from bastion.server.deps import DatabaseDep, Principal, require
from bastion.server.permissions import Permission
from bastion.server.services import projects as service

__all__ = ["router"]

router = APIRouter(tags=["projects"])


@router.get("/projects", response_model=list[ProjectOut])
def list_projects(
    principal: Annotated[Principal, require(Permission.PROJECTS_LIST)], database: DatabaseDep
) -> list[Project]:
    with database.read() as session:
        return service.list_projects(session, caller=principal.identity)


@router.post("/projects", response_model=ProjectOut, status_code=status.HTTP_201_CREATED)
def create_project(
    body: ProjectIn,
    principal: Annotated[Principal, require(Permission.PROJECTS_WRITE)],
    database: DatabaseDep,
) -> Project:
    with database.write(actor=principal.actor) as unit:
        return service.create_project(unit, name=body.name, description=body.description)


@router.get("/projects/{project}", response_model=ProjectOut)
async def get_project(
    project: str, principal: Annotated[Principal, require(Permission.PROJECT_READ)]
) -> Project:
    # No I/O here (the project came with the authorisation query): stay on the event loop.
    return principal.require_project()


@router.get("/projects/{project}/members", response_model=list[MembershipOut])
def list_members(
    project: str,
    principal: Annotated[Principal, require(Permission.MEMBERS_READ)],
    database: DatabaseDep,
) -> list[MembershipOut]:
    with database.read() as session:
        rows = service.list_members(session, project=principal.require_project())
        return [
            MembershipOut(username=m.user.username, role=m.role, created_at=m.created_at)
            for m in rows
        ]


@router.put("/projects/{project}/members/{username}", response_model=MembershipOut)
def set_member(
    project: str,
    username: str,
    body: MembershipIn,
    principal: Annotated[Principal, require(Permission.MEMBERS_WRITE)],
    database: DatabaseDep,
) -> MembershipOut:
    with database.write(actor=principal.actor) as unit:
        membership = service.set_member(unit, project=project, username=username, role=body.role)
        return MembershipOut(
            username=username, role=membership.role, created_at=membership.created_at
        )


@router.delete("/projects/{project}/members/{username}", status_code=status.HTTP_204_NO_CONTENT)
def remove_member(
    project: str,
    username: str,
    principal: Annotated[Principal, require(Permission.MEMBERS_WRITE)],
    database: DatabaseDep,
) -> Response:
    with database.write(actor=principal.actor) as unit:
        service.remove_member(unit, project=project, username=username)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
