"""Users, logins and API tokens."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from bastion.api.common import Name, Request, Response

__all__ = [
    "HumanUserIn",
    "LoginIn",
    "MachineUserIn",
    "NewTokenOut",
    "Password",
    "Permission",
    "Role",
    "Scope",
    "TokenIn",
    "TokenOut",
    "UserIn",
    "UserKind",
    "UserOut",
    "UserPatch",
    "WhoAmI",
]


class Role(enum.StrEnum):
    ADMIN = "admin"
    DATA_STEWARD = "data-steward"
    ML_ENGINEER = "ml-engineer"
    REVIEWER = "reviewer"
    AUDITOR = "auditor"
    AGENT = "agent"
    JOB = "job"
    SERVING = "serving"


class Permission(enum.StrEnum):
    """One capability; ``project`` permissions are checked against the route's project."""

    SELF_READ = "self:read"
    TOKENS_OWN = "tokens:own"
    USERS_READ = "users:read"
    USERS_WRITE = "users:write"
    PROJECTS_LIST = "projects:list"
    PROJECTS_WRITE = "projects:write"
    PROJECT_READ = "project:read"
    MEMBERS_READ = "members:read"
    MEMBERS_WRITE = "members:write"
    CLUSTERS_READ = "clusters:read"
    CLUSTERS_WRITE = "clusters:write"
    CLUSTERS_HEARTBEAT = "clusters:heartbeat"
    RUNS_READ = "runs:read"
    RUNS_WRITE = "runs:write"
    RUNS_REPORT = "runs:report"
    DATASETS_READ = "datasets:read"
    DATASETS_WRITE = "datasets:write"
    DATASETS_RECORD = "datasets:record"
    #: Queue verify/scan jobs on the compute plane (they spend its time: not for read-only roles).
    CHECKS_RUN = "checks:run"
    MODELS_READ = "models:read"
    MODELS_WRITE = "models:write"
    MODELS_RECORD = "models:record"
    APPROVALS_READ = "approvals:read"
    APPROVALS_REQUEST = "approvals:request"
    APPROVALS_DECIDE = "approvals:decide"
    POLICIES_READ = "policies:read"
    POLICIES_WRITE = "policies:write"
    AUDIT_READ = "audit:read"
    ALERTS_READ = "alerts:read"
    ALERTS_WRITE = "alerts:write"
    PRIVACY_READ = "privacy:read"
    PRIVACY_ERASE = "privacy:erase"
    DEPLOYMENTS_READ = "deployments:read"
    DEPLOYMENTS_WRITE = "deployments:write"
    SERVING_KEYS_WRITE = "serving-keys:write"
    CODE_READ = "code:read"
    CODE_PUSH = "code:push"
    #: Only the agent that checked and sealed a pushed package registers it.
    CODE_RECORD = "code:record"
    CODE_REVIEW = "code:review"


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
