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

from bastion.api.identity import Permission, Role

__all__ = ["HUMAN_ROLES", "MACHINE_ROLES", "PERMISSIONS", "PROJECT_ROLES", "Permission", "Role"]


PROJECT_ROLES = frozenset(
    {Role.ADMIN, Role.DATA_STEWARD, Role.ML_ENGINEER, Role.REVIEWER, Role.AUDITOR}
)
HUMAN_ROLES = PROJECT_ROLES
MACHINE_ROLES = frozenset({Role.AGENT, Role.JOB, Role.SERVING})


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
    Permission.CODE_READ: _READERS,
    Permission.CODE_PUSH: frozenset({_A, _E}),
    # A code version is registered only as the cluster's agent checked and sealed it.
    Permission.CODE_RECORD: frozenset({Role.AGENT}),
    Permission.CODE_REVIEW: frozenset({_A, _R}),
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
        Permission.CODE_READ,
        Permission.CODE_PUSH,
        Permission.CODE_RECORD,
        Permission.CODE_REVIEW,
    }
)


#: Held by every authenticated identity, even a user with no project role yet.
ANY_IDENTITY = frozenset(p for p, roles in PERMISSIONS.items() if roles == frozenset(Role))


def allowed(permission: Permission, roles: frozenset[Role]) -> bool:
    return permission in ANY_IDENTITY or bool(PERMISSIONS[permission] & roles)
