"""Request dependencies: the database, the caller's identity and the permission check.

Routes declare what they need with ``Annotated`` aliases; every route except the
public allowlist depends on :func:`require` with exactly one permission.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from sqlalchemy import select

from bastion.db import SINGLE_READ_OPTIONS
from bastion.errors import NotAuthenticated, NotAuthorized, NotFound
from bastion.security.credentials import parse_token, secrets_match
from bastion.server.caller import Identity
from bastion.server.db.models import ApiToken, Membership, Project, User
from bastion.server.db.session import Database
from bastion.server.permissions import PROJECT_SCOPED, Permission, Role, allowed
from bastion.spec import NAME_PATTERN

__all__ = ["DatabaseDep", "Identity", "Principal", "authorize", "get_database", "require"]

WILDCARD_SCOPE = "*"


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
#: A dataset, model or policy name in a route's path: malformed ones are 422 before any lookup.
NamePath = Annotated[str, Path(pattern=NAME_PATTERN, min_length=1, max_length=64)]


_REFUSED = "invalid, expired or revoked token"


def _bearer(request: Request) -> tuple[str, str]:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise NotAuthenticated("missing bearer token; log in with 'bastion login'")
    parsed = parse_token(token.strip())
    if parsed is None:
        raise NotAuthenticated(_REFUSED)
    return parsed


def identify(database: Database, authorization: str) -> Identity:
    """The identity a still-valid ``Authorization: Bearer`` credential stands for; refused
    with ``NotAuthenticated`` otherwise (for callers outside a route's dependencies)."""
    scheme, _, token = authorization.partition(" ")
    parsed = parse_token(token.strip()) if scheme.lower() == "bearer" and token else None
    if parsed is None:
        raise NotAuthenticated(_REFUSED)
    row, _ = _lookup(database, parsed[0], None)
    return _identity(row, parsed[1])


def _identity(row: Any, secret: str) -> Identity:
    """(1) the token exists, (2) its secret matches, (3) it is live, (4) its user is enabled."""
    if row is None or not secrets_match(secret, row.secret_hash):
        raise NotAuthenticated(_REFUSED)
    now = dt.datetime.now(dt.UTC)
    expires = _aware(row.expires_at)
    if row.revoked_at is not None or (expires is not None and expires <= now) or row.disabled:
        raise NotAuthenticated(_REFUSED)
    return Identity(
        user_id=row.user_id,
        username=row.username,
        kind=row.kind,
        is_admin=bool(row.is_admin),
        scopes=frozenset(row.scopes if isinstance(row.scopes, list) else json.loads(row.scopes)),
        token_id=row.token_id,
    )


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)


_TOKEN_COLUMNS = (
    ApiToken.id.label("token_id"),
    ApiToken.secret_hash,
    ApiToken.scopes,
    ApiToken.expires_at,
    ApiToken.revoked_at,
    User.id.label("user_id"),
    User.username,
    User.kind,
    User.is_admin,
    User.disabled,
)


def _roles(identity: Identity, membership_roles: list[str], *, scoped: bool) -> frozenset[Role]:
    if identity.kind == Role.SERVING and scoped:
        # A serving identity reads only the projects it was bound to.
        return frozenset({Role.SERVING}) if Role.SERVING in membership_roles else frozenset()
    if identity.kind != "human":
        return frozenset({Role(identity.kind)})
    if identity.is_admin:
        return frozenset({Role.ADMIN})
    return frozenset(Role(role) for role in membership_roles)


def _lookup(database: Database, token_id: str, project: str | None) -> tuple[Any, list[str]]:
    """The token's row (with the project's and membership's columns for project routes)
    and, for global routes, the user's membership roles; from the cache when fresh."""
    key = (token_id, project)
    cached = database.auth_cache.get(key)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    with database.engine.connect().execution_options(**SINGLE_READ_OPTIONS) as conn:
        if project is not None:
            query = (
                select(
                    *_TOKEN_COLUMNS,
                    Project.id.label("project_id"),
                    Project.name.label("project_name"),
                    Project.description.label("project_description"),
                    Project.created_at.label("project_created_at"),
                    Membership.role,
                )
                .join(User, User.id == ApiToken.user_id)
                .outerjoin(Project, Project.name == project)
                .outerjoin(
                    Membership,
                    (Membership.project_id == Project.id) & (Membership.user_id == User.id),
                )
                .where(ApiToken.id == token_id)
            )
            row = conn.execute(query).first()
            roles = [row.role] if row is not None and row.role else []
        else:
            row = conn.execute(
                select(*_TOKEN_COLUMNS)
                .join(User, User.id == ApiToken.user_id)
                .where(ApiToken.id == token_id)
            ).first()
            roles = (
                list(conn.scalars(select(Membership.role).where(Membership.user_id == row.user_id)))
                if row is not None
                else []
            )
    if row is not None and (project is None or row.project_id is not None):
        database.auth_cache.put(key, (row, roles))  # negative answers are never cached
    return row, roles


def authorize(
    request: Request, database: Database, permission: Permission, credentials: tuple[str, str]
) -> Principal:
    """Authenticate ``credentials`` (token id, secret) and resolve roles for ``permission``:
    one indexed query, usually answered from the cache."""
    token_id, secret = credentials
    scoped = permission in PROJECT_SCOPED
    name = str(request.path_params.get("project", "")) if scoped else None
    row, membership_roles = _lookup(database, token_id, name)
    # The secret, expiry, revocation and account state are checked on every request.
    identity = _identity(row, secret)
    request.state.actor = identity.actor  # who a refusal is recorded against
    project: Project | None = None
    if scoped:
        if row.project_id is None:
            if identity.is_admin or identity.kind != "human":
                raise NotFound(f"project {name!r} does not exist")
            request.state.outside_project = True
            raise NotAuthorized(f"you are not a member of project {name!r}")
        project = Project(
            id=row.project_id,
            name=row.project_name,
            description=row.project_description,
            created_at=_aware(row.project_created_at),
        )
    roles = _roles(identity, membership_roles, scoped=scoped)
    # A person with no role in the project the route is about (an insider-threat signal).
    request.state.outside_project = scoped and identity.kind == "human" and not roles
    if not allowed(permission, roles):
        if identity.kind == Role.SERVING and scoped and project is not None and not roles:
            raise NotAuthorized(
                f"serving identity {identity.username!r} is not bound to project {project.name!r}"
                f" (an admin binds it: bastion member add {project.name} {identity.username} "
                "--role serving)"
            )
        held = ", ".join(sorted(roles)) or "no role"
        where = f" in project {project.name!r}" if project is not None else ""
        raise NotAuthorized(f"{permission.value} is not allowed for {held}{where}")
    if WILDCARD_SCOPE not in identity.scopes and permission.value not in identity.scopes:
        raise NotAuthorized(f"this token lacks the scope {permission.value}")
    return Principal(identity=identity, roles=roles, project=project)


def require(permission: Permission) -> Any:
    """A dependency that admits callers whose roles and token scopes hold ``permission``.

    It runs on the event loop (no thread hop): its two indexed lookups are short, and
    the route body, which does the real work, still runs in the thread pool.
    """

    async def check(request: Request, database: DatabaseDep) -> Principal:
        return authorize(request, database, permission, _bearer(request))

    check.permission = permission  # type: ignore[attr-defined]  # read by the route-table test
    return Depends(check)


def route_permission(call: Callable[..., Any] | None) -> Permission | None:
    """The permission a dependency callable enforces (for the route-table test)."""
    value = getattr(call, "permission", None)
    return value if isinstance(value, Permission) else None
