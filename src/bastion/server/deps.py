"""Request dependencies: the database, the caller's identity and the permission check.

Routes declare what they need with ``Annotated`` aliases; every route except the
public allowlist depends on :func:`require` with exactly one permission.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import select

from bastion.errors import NotAuthenticated, NotAuthorized, NotFound
from bastion.server.auth import parse_token, secrets_match
from bastion.server.db.models import ApiToken, Membership, Project
from bastion.server.db.session import Database
from bastion.server.permissions import PROJECT_SCOPED, Permission, Role, allowed

__all__ = ["DatabaseDep", "Identity", "Principal", "authenticate", "get_database", "require"]

WILDCARD_SCOPE = "*"


@dataclass(frozen=True)
class Identity:
    """Who is calling, from a valid token."""

    user_id: str
    username: str
    kind: str
    is_admin: bool
    scopes: frozenset[str]
    token_id: str

    @property
    def actor(self) -> str:
        return f"{'user' if self.kind == 'human' else self.kind}:{self.username}"


@dataclass(frozen=True)
class Principal:
    """An identity with the roles it holds for this request (and the project, if any)."""

    identity: Identity
    roles: frozenset[Role]
    project: Project | None

    @property
    def actor(self) -> str:
        return self.identity.actor

    def require_project(self) -> Project:
        if self.project is None:  # pragma: no cover - only project routes call this
            raise NotFound("this route is not about a project")
        return self.project


def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


DatabaseDep = Annotated[Database, Depends(get_database)]


def authenticate(request: Request, database: DatabaseDep) -> Identity:
    """Resolve ``Authorization: Bearer <token>`` to an identity, or refuse with 401."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise NotAuthenticated("missing bearer token; log in with 'bastion login'")
    parsed = parse_token(token.strip())
    refused = NotAuthenticated("invalid, expired or revoked token")
    if parsed is None:
        raise refused
    token_id, secret = parsed
    with database.read() as session:
        row = session.get(ApiToken, token_id)
        if row is None or not secrets_match(secret, row.secret_hash):
            raise refused
        now = dt.datetime.now(dt.UTC)
        expires = row.expires_at
        if row.revoked_at is not None or (expires is not None and expires <= now):
            raise refused
        user = row.user
        if user.disabled:
            raise refused
        return Identity(
            user_id=user.id,
            username=user.username,
            kind=user.kind,
            is_admin=user.is_admin,
            scopes=frozenset(row.scopes),
            token_id=row.id,
        )


CurrentIdentity = Annotated[Identity, Depends(authenticate)]


def _roles(identity: Identity, memberships: list[Membership]) -> frozenset[Role]:
    if identity.kind != "human":
        return frozenset({Role(identity.kind)})
    if identity.is_admin:
        return frozenset({Role.ADMIN})
    return frozenset(Role(m.role) for m in memberships)


def require(permission: Permission) -> Any:
    """A dependency that admits callers whose roles and token scopes hold ``permission``."""

    def check(request: Request, identity: CurrentIdentity, database: DatabaseDep) -> Principal:
        project: Project | None = None
        with database.read() as session:
            if permission in PROJECT_SCOPED:
                name = request.path_params.get("project", "")
                project = session.scalars(select(Project).where(Project.name == name)).first()
                if project is None:
                    if identity.is_admin or identity.kind != "human":
                        raise NotFound(f"project {name!r} does not exist")
                    raise NotAuthorized(f"you are not a member of project {name!r}")
                memberships = list(
                    session.scalars(
                        select(Membership).where(
                            Membership.user_id == identity.user_id,
                            Membership.project_id == project.id,
                        )
                    )
                )
            else:
                memberships = list(
                    session.scalars(
                        select(Membership).where(Membership.user_id == identity.user_id)
                    )
                )
        roles = _roles(identity, memberships)
        if not allowed(permission, roles):
            held = ", ".join(sorted(roles)) or "no role"
            where = f" in project {project.name!r}" if project is not None else ""
            raise NotAuthorized(f"{permission.value} is not allowed for {held}{where}")
        if WILDCARD_SCOPE not in identity.scopes and permission.value not in identity.scopes:
            raise NotAuthorized(f"this token lacks the scope {permission.value}")
        return Principal(identity=identity, roles=roles, project=project)

    check.permission = permission  # type: ignore[attr-defined]  # read by the route-table test
    return Depends(check)


def route_permission(call: Callable[..., Any] | None) -> Permission | None:
    """The permission a dependency callable enforces (for the route-table test)."""
    value = getattr(call, "permission", None)
    return value if isinstance(value, Permission) else None
