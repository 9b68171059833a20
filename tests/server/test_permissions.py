"""Every route is covered by the permission table, and enforces exactly what it says."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from bastion.server.app import PUBLIC_ROUTES
from bastion.server.deps import route_permission
from bastion.server.permissions import PERMISSIONS, Permission
from bastion.server.web import is_dashboard
from tests.server.conftest import ControlPlane, smoke_spec

PATH_VALUES = {
    "project": "p1",
    "username": "someone",
    "token_id": "0" * 32,
    "name": "thing",
    "run_id": "0" * 32,
    "approval_id": "0" * 32,
    "alert_id": "0" * 32,
    "erasure_id": "0" * 32,
    "deployment": "d1",
    "key_id": "0" * 32,
    "version": "1",
}


# The expected matrix, spelled out: which roles hold each permission. It is written here by
# hand, not read from the table it checks.
A, S, E, R, U = "admin", "data-steward", "ml-engineer", "reviewer", "auditor"
PEOPLE = {A, S, E, R, U}
EVERYONE = PEOPLE | {"agent", "job", "serving"}
EXPECTED: dict[str, set[str]] = {
    "self:read": EVERYONE,
    "tokens:own": EVERYONE,
    "users:read": {A, U},
    "users:write": {A},
    "projects:list": PEOPLE,
    "projects:write": {A},
    "project:read": PEOPLE,
    "members:read": PEOPLE,
    "members:write": {A},
    "clusters:read": {A, S, E, U},
    "clusters:write": {A},
    "clusters:heartbeat": {"agent"},
    "runs:read": PEOPLE,
    "runs:write": {A, E},
    "runs:report": {"agent", "job"},
    "datasets:read": PEOPLE,
    "datasets:write": {A, S},
    "datasets:record": {"agent"},
    "checks:run": {A, S, E},
    "models:read": PEOPLE | {"serving"},
    "models:write": {A, E},
    "models:record": {"agent"},
    "approvals:read": PEOPLE,
    "approvals:request": {A, E},
    "approvals:decide": {A, R},
    "policies:read": PEOPLE,
    "policies:write": {A},
    "audit:read": {A, U},
    "alerts:read": {A, U},
    "alerts:write": {A},
    "privacy:read": {A, S, U},
    "privacy:erase": {A, S},
    "deployments:read": PEOPLE,
    "deployments:write": {A, E},
    "serving-keys:write": {A, E},
    "code:read": PEOPLE,
    "code:push": {A, E},
    "code:record": {"agent"},
    "code:review": {A, R},
}
#: Routes whose permission matters beyond the matrix, spelled out.
EXPECTED_ROUTES = {
    ("POST", "/api/v1/projects/{project}/datasets/{name}/versions/{version}/verify"): "checks:run",
    ("POST", "/api/v1/projects/{project}/datasets/{name}/versions/{version}/scan"): "checks:run",
    ("POST", "/api/v1/projects/{project}/models/{name}/versions/{version}/verify"): "checks:run",
    ("POST", "/api/v1/tokens"): "tokens:own",
    ("GET", "/api/v1/projects/{project}/models"): "models:read",
    ("POST", "/api/v1/clusters/{name}/join-token"): "clusters:write",
    ("POST", "/api/v1/projects/{project}/code"): "code:push",
    ("POST", "/api/v1/projects/{project}/code/{name}/versions/{version}/record"): "code:record",
    ("POST", "/api/v1/projects/{project}/code/{name}/versions/{version}/reviews"): "code:review",
}


def test_the_permission_table_is_the_expected_matrix() -> None:
    table = {
        permission.value: {role.value for role in roles}
        for permission, roles in PERMISSIONS.items()
    }
    assert table == EXPECTED


def test_compute_plane_checks_are_not_for_read_only_roles(control_plane: ControlPlane) -> None:
    declared = {(m, p): permission for m, p, permission in _routes(control_plane)}
    assert {route: declared[route] for route in EXPECTED_ROUTES} == EXPECTED_ROUTES


def _routes(cp: ControlPlane) -> list[tuple[str, str, Permission | None]]:
    found = []
    for context in iter_route_contexts(cp.app.routes):
        route = context.original_route
        # The dashboard's pages (cookie sessions) have their own table test: test_dashboard.py.
        if (
            not isinstance(route, APIRoute)
            or is_dashboard(str(context.path))
            or context.path == "/"
        ):
            continue
        permissions = {
            p
            for dep in route.dependant.dependencies
            if (p := route_permission(dep.call)) is not None
        }
        assert len(permissions) <= 1, f"{context.path} declares several permissions"
        for method in context.methods or ():
            found.append((method, str(context.path), next(iter(permissions), None)))
    return found


def _url(path: str) -> str:
    return re.sub(r"{(\w+)}", lambda m: PATH_VALUES[m.group(1)], path)


def test_every_route_is_public_or_in_the_table(control_plane: ControlPlane) -> None:
    routes = _routes(control_plane)
    assert len(routes) >= 35
    for method, path, permission in routes:
        if (method, path) in PUBLIC_ROUTES:
            assert permission is None, f"{method} {path} is public but declares {permission}"
        else:
            assert permission is not None, f"{method} {path} has no entry in the permission table"
            assert permission in PERMISSIONS


def test_every_route_refuses_anonymous_callers(control_plane: ControlPlane) -> None:
    cp = control_plane
    for method, path, _ in _routes(cp):
        if (method, path) in PUBLIC_ROUTES:
            continue
        response = cp.client.request(method, _url(path), json={})
        assert response.status_code == 401, f"{method} {path} -> {response.status_code}"
        assert response.headers["www-authenticate"] == "Bearer"
        bogus = cp.client.request(
            method, _url(path), json={}, headers=cp.as_("bst_" + "0" * 32 + "_x")
        )
        assert bogus.status_code == 401


def test_each_role_gets_exactly_what_the_table_says(
    control_plane: ControlPlane, role_tokens: dict[str, str]
) -> None:
    cp = control_plane
    checked = 0
    for method, path, permission in _routes(cp):
        if permission is None:
            continue
        for role, token in role_tokens.items():
            response = cp.client.request(method, _url(path), json={}, headers=cp.as_(token))
            allowed = role in EXPECTED[permission.value]
            if allowed:
                assert response.status_code not in (401, 403), (
                    f"{role} should be allowed {method} {path} ({permission}): {response.text}"
                )
            else:
                assert response.status_code == 403, (
                    f"{role} must be refused {method} {path} ({permission}): {response.status_code}"
                )
            checked += 1
    assert checked >= 35 * len(role_tokens)


def test_non_member_is_refused_project_routes(
    control_plane: ControlPlane, role_tokens: dict[str, str]
) -> None:
    cp = control_plane
    admin = cp.as_(cp.admin_token)
    assert cp.client.post("/api/v1/projects", json={"name": "p2"}, headers=admin).status_code == 201
    for role in ("data-steward", "ml-engineer", "reviewer", "auditor"):
        response = cp.client.get("/api/v1/projects/p2/runs", headers=cp.as_(role_tokens[role]))
        assert response.status_code == 403
        assert "p2" in response.json()["detail"]


def test_token_scopes_narrow_roles(control_plane: ControlPlane) -> None:
    cp = control_plane
    admin = cp.as_(cp.admin_token)
    narrow = cp.client.post(
        "/api/v1/tokens", json={"name": "read users", "scopes": ["users:read"]}, headers=admin
    ).json()["token"]
    assert cp.client.get("/api/v1/users", headers=cp.as_(narrow)).status_code == 200
    refused = cp.client.post("/api/v1/projects", json={"name": "x"}, headers=cp.as_(narrow))
    assert refused.status_code == 403 and "scope projects:write" in refused.json()["detail"]
    # A narrow token cannot mint a wider one.
    wider = cp.client.post(
        "/api/v1/tokens", json={"name": "escalate", "scopes": ["*"]}, headers=cp.as_(narrow)
    )
    assert wider.status_code == 403


@pytest.mark.parametrize("role", ["reviewer", "auditor", "data-steward"])
def test_roles_that_cannot_start_runs(
    control_plane: ControlPlane, role_tokens: dict[str, str], role: str
) -> None:
    cp = control_plane
    response = cp.client.post(
        "/api/v1/projects/p1/runs",
        json=smoke_spec(),
        headers=cp.as_(role_tokens[role]),
    )
    assert response.status_code == 403


def test_a_serving_identity_reads_only_the_projects_it_is_bound_to(
    control_plane: ControlPlane, role_tokens: dict[str, str]
) -> None:
    cp = control_plane
    admin = cp.as_(cp.admin_token)
    serving = cp.as_(role_tokens["serving"])  # bound to p1 by the fixture
    assert cp.client.post("/api/v1/projects", json={"name": "p2"}, headers=admin).status_code == 201
    assert cp.client.get("/api/v1/projects/p1/models", headers=serving).status_code == 200
    other = cp.client.get("/api/v1/projects/p2/models", headers=serving)
    assert other.status_code == 403 and "not bound to project 'p2'" in other.json()["detail"]
    # An unbound serving identity reads no project at all.
    assert (
        cp.client.post(
            "/api/v1/users", json={"username": "loose", "kind": "serving"}, headers=admin
        ).status_code
        == 201
    )
    loose = cp.client.post(
        "/api/v1/tokens", json={"name": "l", "username": "loose"}, headers=admin
    ).json()["token"]
    refused = cp.client.get("/api/v1/projects/p1/models", headers=cp.as_(loose))
    assert refused.status_code == 403
    # Only serving identities hold the serving role, and they hold no other.
    for username, role in (("loose", "ml-engineer"), ("engineer", "serving"), ("job-1", "serving")):
        put = cp.client.put(
            f"/api/v1/projects/p1/members/{username}", json={"role": role}, headers=admin
        )
        assert put.status_code == 422, (username, role, put.text)
