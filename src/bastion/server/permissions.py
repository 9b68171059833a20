"""Who may do what: the one permission table of the control plane.

Every route declares one :class:`Permission` (see ``deps.require``); this table
says which roles hold it. Humans get ``admin`` globally when they are
administrators and otherwise the role of their membership in the project the
route is about; machine identities have exactly their own role, and a serving
identity holds it only in the projects it was bound to (``bastion member add P NAME
--role serving``): agents are bound to their cluster and jobs to their run by the
services. A token's scopes can narrow that further, never widen it.
"""

from __future__ import annotations

import enum

__all__ = ["HUMAN_ROLES", "MACHINE_ROLES", "PERMISSIONS", "PROJECT_ROLES", "Permission", "Role"]


class Role(enum.StrEnum):
    ADMIN = "admin"
    DATA_STEWARD = "data-steward"
    ML_ENGINEER = "ml-engineer"
    REVIEWER = "reviewer"
    AUDITOR = "auditor"
    AGENT = "agent"
    JOB = "job"
    SERVING = "serving"


PROJECT_ROLES = frozenset(
    {Role.ADMIN, Role.DATA_STEWARD, Role.ML_ENGINEER, Role.REVIEWER, Role.AUDITOR}
)
HUMAN_ROLES = PROJECT_ROLES
MACHINE_ROLES = frozenset({Role.AGENT, Role.JOB, Role.SERVING})


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


_A, _S, _E, _R, _U = Role.ADMIN, Role.DATA_STEWARD, Role.ML_ENGINEER, Role.REVIEWER, Role.AUDITOR
_READERS = frozenset({_A, _S, _E, _R, _U})

#: The single source of truth for authorisation.
PERMISSIONS: dict[Permission, frozenset[Role]] = {
    Permission.SELF_READ: frozenset(Role),
    Permission.TOKENS_OWN: frozenset(Role),
    Permission.USERS_READ: frozenset({_A, _U}),
    Permission.USERS_WRITE: frozenset({_A}),
    Permission.PROJECTS_LIST: _READERS,
    Permission.PROJECTS_WRITE: frozenset({_A}),
    Permission.PROJECT_READ: _READERS,
    Permission.MEMBERS_READ: _READERS,
    Permission.MEMBERS_WRITE: frozenset({_A}),
    Permission.CLUSTERS_READ: frozenset({_A, _S, _E, _U}),
    Permission.CLUSTERS_WRITE: frozenset({_A}),
    Permission.CLUSTERS_HEARTBEAT: frozenset({Role.AGENT}),
    Permission.RUNS_READ: _READERS,
    Permission.RUNS_WRITE: frozenset({_A, _E}),
    Permission.RUNS_REPORT: frozenset({Role.AGENT, Role.JOB}),
    Permission.DATASETS_READ: _READERS,
    Permission.DATASETS_WRITE: frozenset({_A, _S}),
    # Only the agent that sealed the data records a version (DESIGN §1: data stays put).
    Permission.DATASETS_RECORD: frozenset({Role.AGENT}),
    Permission.CHECKS_RUN: frozenset({_A, _S, _E}),
    Permission.MODELS_READ: _READERS | {Role.SERVING},
    Permission.MODELS_WRITE: frozenset({_A, _E}),
    # A model version exists only as the agent sealed it after a training run.
    Permission.MODELS_RECORD: frozenset({Role.AGENT}),
    Permission.APPROVALS_READ: _READERS,
    Permission.APPROVALS_REQUEST: frozenset({_A, _E}),
    Permission.APPROVALS_DECIDE: frozenset({_A, _R}),
    Permission.POLICIES_READ: _READERS,
    Permission.POLICIES_WRITE: frozenset({_A}),
    Permission.AUDIT_READ: frozenset({_A, _U}),
    Permission.ALERTS_READ: frozenset({_A, _U}),
    Permission.ALERTS_WRITE: frozenset({_A}),
    Permission.PRIVACY_READ: frozenset({_A, _S, _U}),
    Permission.PRIVACY_ERASE: frozenset({_A, _S}),
    Permission.DEPLOYMENTS_READ: _READERS,
    Permission.DEPLOYMENTS_WRITE: frozenset({_A, _E}),
    Permission.SERVING_KEYS_WRITE: frozenset({_A, _E}),
}

#: Permissions checked against the route's ``{project}``; the others are global.
PROJECT_SCOPED = frozenset(
    {
        Permission.PROJECT_READ,
        Permission.MEMBERS_READ,
        Permission.MEMBERS_WRITE,
        Permission.RUNS_READ,
        Permission.RUNS_WRITE,
        Permission.RUNS_REPORT,
        Permission.DATASETS_READ,
        Permission.DATASETS_WRITE,
        Permission.DATASETS_RECORD,
        Permission.CHECKS_RUN,
        Permission.MODELS_READ,
        Permission.MODELS_WRITE,
        Permission.MODELS_RECORD,
        Permission.APPROVALS_READ,
        Permission.APPROVALS_REQUEST,
        Permission.APPROVALS_DECIDE,
        Permission.POLICIES_READ,
        Permission.POLICIES_WRITE,
        Permission.PRIVACY_READ,
        Permission.PRIVACY_ERASE,
        Permission.DEPLOYMENTS_READ,
        Permission.DEPLOYMENTS_WRITE,
        Permission.SERVING_KEYS_WRITE,
    }
)


#: Held by every authenticated identity, even a user with no project role yet.
ANY_IDENTITY = frozenset(p for p, roles in PERMISSIONS.items() if roles == frozenset(Role))


def allowed(permission: Permission, roles: frozenset[Role]) -> bool:
    return permission in ANY_IDENTITY or bool(PERMISSIONS[permission] & roles)
