"""Control-plane fixtures: a plane per test on SQLite or on PostgreSQL, and a token per role.

Each plane has its own settings and database; the app and the migrated schema it starts from
are reused (tests/planes.py)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response

from bastion.config import Settings
from bastion.server.app import build_database
from bastion.server.db.session import Database
from bastion.server.services.bootstrap import initialise
from tests.pg import postgres_schema
from tests.planes import migrated, plane_app

PASSWORD = "correct horse battery staple"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The control-plane suite runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'control-plane.db'}"
    else:
        yield from postgres_schema()


@dataclass
class ControlPlane:
    app: FastAPI
    client: TestClient
    database: Database
    admin_token: str
    settings: Settings

    def as_(self, token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"} if token else {}


@contextlib.contextmanager
def started_plane(settings: Settings) -> Iterator[ControlPlane]:
    """A control plane on ``settings``' database, its administrator made, served in-process."""
    migrated(settings)
    database = build_database(settings)
    result = initialise(database, username="admin", password=PASSWORD)
    with (
        plane_app(settings, database) as app,
        TestClient(app, client=("127.0.0.1", 50000)) as client,
    ):
        yield ControlPlane(app, client, database, result.token, settings)
    database.engine.dispose()


@pytest.fixture
def control_plane(db_url: str, home: Path) -> Iterator[ControlPlane]:
    settings = Settings(home=home, control_plane_database_url=db_url, audit_checkpoint_interval=50)
    with started_plane(settings) as plane:
        yield plane


ROLE_USERS = {
    "data-steward": "steward",
    "ml-engineer": "engineer",
    "reviewer": "reviewer",
    "auditor": "auditor",
    "agent": "agent-1",
    "job": "job-1",
    "serving": "serving-1",
}


@pytest.fixture
def role_tokens(control_plane: ControlPlane) -> dict[str, str]:
    """A token per role; project roles are held in project 'p1'."""
    cp = control_plane
    admin = cp.as_(cp.admin_token)
    assert cp.client.post("/api/v1/projects", json={"name": "p1"}, headers=admin).status_code == 201
    assert cp.client.post("/api/v1/clusters", json={"name": "c1"}, headers=admin).status_code == 201
    tokens = {"admin": cp.admin_token}
    for role, username in ROLE_USERS.items():
        kind = role if role in {"agent", "job", "serving"} else "human"
        body = {"username": username, "kind": kind}
        assert cp.client.post("/api/v1/users", json=body, headers=admin).status_code == 201
        if kind == "human":
            put = cp.client.put(
                f"/api/v1/projects/p1/members/{username}", json={"role": role}, headers=admin
            )
            assert put.status_code == 200, put.text
            tokens[role] = human_token(cp, username)
            continue
        if kind == "serving":  # bound to the project it serves
            put = cp.client.put(
                f"/api/v1/projects/p1/members/{username}", json={"role": "serving"}, headers=admin
            )
            assert put.status_code == 200, put.text
        minted = cp.client.post(
            "/api/v1/tokens", json={"name": role, "username": username}, headers=admin
        )
        assert minted.status_code == 201, minted.text
        tokens[role] = minted.json()["token"]
    return tokens


def human_token(cp: ControlPlane, username: str) -> str:
    """A person's own session token: the admin sets PASSWORD, the person logs in (an admin
    cannot mint a token for a person)."""
    patched = cp.client.patch(
        f"/api/v1/users/{username}", json={"password": PASSWORD}, headers=cp.as_(cp.admin_token)
    )
    assert patched.status_code == 200, patched.text
    login = cp.client.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert login.status_code == 201, login.text
    token: str = login.json()["token"]
    return token


def smoke_spec(project: str = "p1", cluster: str = "c1", **job: object) -> dict[str, object]:
    """A valid run spec for the built-in smoke job."""
    return {
        "name": "smoke",
        "project": project,
        "cluster": cluster,
        "job": {"type": "smoke", **job},
    }


WEB = "https://testserver"  # the session cookie is Secure: the test client must speak https


@pytest.fixture
def dashboard_users(control_plane: ControlPlane, role_tokens: dict[str, str]) -> list[str]:
    """The humans of ``role_tokens``, each with PASSWORD, so each can log in to the dashboard."""
    return ["admin", "steward", "engineer", "reviewer", "auditor"]


def form_value(html: str, name: str) -> str:
    """The value of the first hidden input called ``name`` in a page."""
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found is not None, f"no {name} field in the page"
    return found.group(1)


def web_client(cp: ControlPlane) -> TestClient:
    """A browser-like client of the dashboard (https, redirects not followed), no session yet."""
    return TestClient(cp.app, base_url=WEB, client=("127.0.0.1", 50001), follow_redirects=False)


def post_login(client: TestClient, username: str, password: str = PASSWORD) -> Response:
    """Open the login form and send it, with its nonce, as a browser would."""
    form = client.get("/ui/login")
    assert form.status_code == 200
    response: Response = client.post(
        "/ui/login",
        data={"username": username, "password": password, "nonce": form_value(form.text, "nonce")},
    )
    return response


def dashboard_login(cp: ControlPlane, username: str, password: str = PASSWORD) -> TestClient:
    """A browser-like client with a dashboard session of ``username``."""
    client = web_client(cp)
    response = post_login(client, username, password)
    assert response.status_code == 303, response.text
    return client
