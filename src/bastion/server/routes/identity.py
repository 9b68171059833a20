"""Health, login, the caller, users and tokens."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Request, status

from bastion.api.identity import (
    HumanUserIn,
    LoginIn,
    NewTokenOut,
    TokenIn,
    TokenOut,
    UserIn,
    UserOut,
    UserPatch,
    WhoAmI,
)
from bastion.errors import NotAuthenticated
from bastion.server.db.models import ApiToken, User
from bastion.server.db.session import Database
from bastion.server.deps import DatabaseDep, Principal, require
from bastion.server.permissions import Permission
from bastion.server.services import identity as service

__all__ = ["password_login", "public", "router"]

public = APIRouter(tags=["public"])
router = APIRouter(tags=["identity"])

Self = Annotated[Principal, require(Permission.SELF_READ)]
OwnTokens = Annotated[Principal, require(Permission.TOKENS_OWN)]
UsersRead = Annotated[Principal, require(Permission.USERS_READ)]
UsersWrite = Annotated[Principal, require(Permission.USERS_WRITE)]


def _token_out(token: ApiToken, secret: str | None = None) -> TokenOut:
    fields: dict[str, Any] = {
        "id": token.id,
        "name": token.name,
        "username": token.user.username,
        "scopes": token.scopes,
        "created_at": token.created_at,
        "expires_at": token.expires_at,
        "revoked_at": token.revoked_at,
        "last_used_at": token.last_used_at,
    }
    return NewTokenOut(**fields, token=secret) if secret else TokenOut(**fields)


@public.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness; needs no credentials and says nothing about the data."""
    return {"status": "ok"}


@public.post("/api/v1/auth/login", response_model=NewTokenOut, status_code=status.HTTP_201_CREATED)
def login(body: LoginIn, request: Request, database: DatabaseDep) -> TokenOut:
    """Exchange a password for a session token (rate-limited per account and address)."""
    result = password_login(request, database, username=body.username, password=body.password)
    if result is None:
        raise NotAuthenticated("wrong username or password")
    return _token_out(*result)


def password_login(
    request: Request,
    database: Database,
    *,
    username: str,
    password: str,
    ending: tuple[str, str] | None = None,
) -> tuple[ApiToken, str] | None:
    """Check a password (throttled per account and client address) and mint a login session,
    for the API and the dashboard alike. ``ending`` (token id, secret), a session the caller
    presented, is revoked in the same transaction. None: wrong username or password."""
    address = request.client.host if request.client else "unknown"
    with database.write(actor="anonymous") as unit:
        result = service.authenticate_password(
            unit,
            username=username,
            password=password,
            address=address,
            throttle=request.app.state.login_throttle,
            session_hours=request.app.state.settings.session_token_hours,
        )
        if result is not None and ending is not None:
            service.end_session(unit, token_id=ending[0], secret=ending[1])
    return result


@router.get("/auth/whoami", response_model=WhoAmI)
def whoami(principal: Self, database: DatabaseDep) -> WhoAmI:
    identity = principal.identity
    with database.read() as session:
        memberships = service.memberships_of(session, identity.user_id)
    return WhoAmI(
        username=identity.username,
        kind=identity.kind,
        is_admin=identity.is_admin,
        scopes=sorted(identity.scopes),
        memberships=memberships,
    )


@router.get("/users", response_model=list[UserOut])
def list_users(_: UsersRead, database: DatabaseDep) -> list[User]:
    with database.read() as session:
        return list(session.query(User).order_by(User.username))


@router.post("/users", response_model=UserOut, status_code=status.HTTP_201_CREATED)
def create_user(body: UserIn, principal: UsersWrite, database: DatabaseDep) -> User:
    with database.write(actor=principal.actor) as unit:
        if isinstance(body, HumanUserIn):
            is_admin, password = body.is_admin, body.password
        else:
            is_admin, password = False, None
        return service.create_user(
            unit, username=body.username, kind=body.kind, is_admin=is_admin, password=password
        )


@router.get("/users/{username}", response_model=UserOut)
def get_user(username: str, _: UsersRead, database: DatabaseDep) -> User:
    with database.read() as session:
        return service.get_user(session, username)


@router.patch("/users/{username}", response_model=UserOut)
def update_user(
    username: str, body: UserPatch, principal: UsersWrite, database: DatabaseDep
) -> User:
    with database.write(actor=principal.actor) as unit:
        return service.update_user(
            unit,
            username=username,
            disabled=body.disabled,
            password=body.password,
            by=principal.identity.username,
        )


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(
    principal: OwnTokens, database: DatabaseDep, username: str | None = None
) -> list[TokenOut]:
    with database.read() as session:
        tokens = service.list_tokens(session, caller=principal.identity, username=username)
        return [_token_out(token) for token in tokens]


@router.post("/tokens", response_model=NewTokenOut, status_code=status.HTTP_201_CREATED)
def create_token(body: TokenIn, principal: OwnTokens, database: DatabaseDep) -> TokenOut:
    """Create a token; the secret is in this response only."""
    with database.write(actor=principal.actor) as unit:
        token, secret = service.create_token(
            unit,
            caller=principal.identity,
            name=body.name,
            scopes=[str(scope) for scope in body.scopes],
            expires_in=dt.timedelta(days=body.expires_in_days) if body.expires_in_days else None,
            username=body.username,
        )
    return _token_out(token, secret)


@router.delete("/tokens/{token_id}", response_model=TokenOut)
def revoke_token(token_id: str, principal: OwnTokens, database: DatabaseDep) -> TokenOut:
    with database.write(actor=principal.actor) as unit:
        token = service.revoke_token(unit, caller=principal.identity, token_id=token_id)
        return _token_out(token)
