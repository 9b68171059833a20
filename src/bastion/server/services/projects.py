"""Projects and memberships."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.errors import Conflict, InvalidInput, NotFound
from bastion.server.caller import Identity
from bastion.server.db.models import Membership, Project
from bastion.server.db.session import UnitOfWork
from bastion.server.services.identity import get_user

__all__ = ["create_project", "get_project", "list_projects", "remove_member", "set_member"]


def get_project(session: Session, name: str) -> Project:
    project = session.scalars(select(Project).where(Project.name == name)).first()
    if project is None:
        raise NotFound(f"project {name!r} does not exist")
    return project


def create_project(unit: UnitOfWork, *, name: str, description: str) -> Project:
    if unit.session.scalars(select(Project).where(Project.name == name)).first() is not None:
        raise Conflict(f"project {name!r} already exists")
    project = Project(name=name, description=description)
    unit.session.add(project)
    unit.record("project.create", f"project:{name}", {"description": description})
    return project


def list_projects(session: Session, *, caller: Identity) -> list[Project]:
    query = select(Project).order_by(Project.name)
    if not caller.is_admin:
        query = query.join(Membership, Membership.project_id == Project.id).where(
            Membership.user_id == caller.user_id
        )
    return list(session.scalars(query))


def set_member(unit: UnitOfWork, *, project: str, username: str, role: str) -> Membership:
    found = get_project(unit.session, project)
    user = get_user(unit.session, username)
    if user.kind == "serving" or role == "serving":
        # A serving identity is bound to a project with the role of its own kind, and only so.
        if user.kind != role:
            raise InvalidInput(
                f"{username!r} is a {user.kind} identity; only serving identities hold the "
                "serving role, and they hold no other"
            )
    elif user.kind != "human":
        raise InvalidInput(f"{username!r} is a machine identity; it cannot hold a project role")
    membership = unit.session.scalars(
        select(Membership).where(Membership.project_id == found.id, Membership.user_id == user.id)
    ).first()
    if membership is None:
        membership = Membership(project_id=found.id, user_id=user.id, role=role)
        membership.user = user
        unit.session.add(membership)
    elif membership.role == role:
        return membership
    else:
        membership.role = role
    unit.record("member.set", f"project:{project}", {"username": username, "role": role})
    unit.session.flush()
    return membership


def remove_member(unit: UnitOfWork, *, project: str, username: str) -> None:
    found = get_project(unit.session, project)
    user = get_user(unit.session, username)
    membership = unit.session.scalars(
        select(Membership).where(Membership.project_id == found.id, Membership.user_id == user.id)
    ).first()
    if membership is None:
        raise NotFound(f"{username!r} is not a member of project {project!r}")
    unit.session.delete(membership)
    unit.record("member.remove", f"project:{project}", {"username": username})


def list_members(session: Session, *, project: Project) -> list[Membership]:
    return list(session.scalars(select(Membership).where(Membership.project_id == project.id)))
