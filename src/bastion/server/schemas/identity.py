"""Users, logins and API tokens."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from bastion.server.permissions import Permission
from bastion.server.schemas.common import Name, Request, Response

Password = Annotated[str, StringConstraints(min_length=12, max_length=256)]
UserKind = Literal["human", "agent", "job", "serving"]
Scope = Literal["*"] | Permission


def _all_scopes() -> list[Scope]:
    return ["*"]


class LoginIn(Request):
    username: Name
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class HumanUserIn(Request):
    username: Name
    kind: Literal["human"] = "human"
    is_admin: bool = False
    password: Password | None = None


class MachineUserIn(Request):
    """Machine identities (agent, job, serving) never hold passwords or admin rights."""

    username: Name
    kind: Literal["agent", "job", "serving"]


UserIn = HumanUserIn | MachineUserIn


class UserPatch(Request):
    disabled: bool | None = None
    password: Password | None = None


class UserOut(Response):
    id: str
    username: str
    kind: str
    is_admin: bool
    disabled: bool
    created_at: dt.datetime


class TokenIn(Request):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    scopes: list[Scope] = Field(default_factory=_all_scopes, min_length=1, max_length=64)
    expires_in_days: int | None = Field(default=90, ge=1, le=3650)
    username: Name | None = None  # admins may mint tokens for another (machine) user


class TokenOut(Response):
    id: str
    name: str
    username: str
    scopes: list[str]
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None


class NewTokenOut(TokenOut):
    token: str = Field(description="Shown once; store it now.")


class WhoAmI(Response):
    username: str
    kind: str
    is_admin: bool
    scopes: list[str]
    memberships: dict[str, str]
