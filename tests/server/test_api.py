"""Control-plane behaviour: auth, audit in the same transaction, bad input, outages."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select, text, update
from sqlalchemy.exc import OperationalError

from bastion.server.db.models import ApiToken, Project
from tests.server.conftest import PASSWORD, ControlPlane, human_token, smoke_spec


def _actions(cp: ControlPlane) -> list[str]:
    return [row.action for row in cp.database.audit.rows()]


def test_health_is_public_and_has_security_headers(control_plane: ControlPlane) -> None:
    response = control_plane.client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    for header in ("x-content-type-options", "x-frame-options", "content-security-policy"):
        assert header in response.headers
    refused = control_plane.client.get("/api/v1/users")
    assert refused.status_code == 401 and refused.headers["x-frame-options"] == "DENY"


def test_openapi_needs_a_token(control_plane: ControlPlane) -> None:
    cp = control_plane
    assert cp.client.get("/api/v1/openapi.json").status_code == 401
    spec = cp.client.get("/api/v1/openapi.json", headers=cp.as_(cp.admin_token)).json()
    assert "/api/v1/projects/{project}/runs" in spec["paths"]
    assert cp.client.get("/docs").status_code == 404


def test_login_issues_a_session_token_and_is_audited(control_plane: ControlPlane) -> None:
    cp = control_plane
    response = cp.client.post(
        "/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}
    )
    assert response.status_code == 201, response.text
    token = response.json()["token"]
    who = cp.client.get("/api/v1/auth/whoami", headers=cp.as_(token)).json()
    assert who["username"] == "admin" and who["is_admin"] is True
    assert "token.create" in _actions(cp)
    assert PASSWORD not in json.dumps([r.to_export() for r in cp.database.audit.rows()])


def test_failed_logins_are_throttled_per_account_and_address_and_audited(
    control_plane: ControlPlane,
) -> None:
    cp = control_plane
    for _ in range(cp.settings.login_max_failures):
        bad = cp.client.post("/api/v1/auth/login", json={"username": "admin", "password": "wrong"})
        assert bad.status_code == 401 and bad.json()["detail"] == "wrong username or password"
    limited = cp.client.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) == 2
    assert _actions(cp).count("auth.login.failed") == cp.settings.login_max_failures
    failed = [row for row in cp.database.audit.rows() if row.action == "auth.login.failed"]
    assert json.loads(failed[-1].details) == {"address": "127.0.0.1"}
    unknown = cp.client.post("/api/v1/auth/login", json={"username": "ghost", "password": "x"})
    assert unknown.status_code == 401 and unknown.json()["detail"] == "wrong username or password"
    # The guesser is held back where it guesses from; the admin, elsewhere, is not locked out.
    with TestClient(cp.app, client=("127.0.0.2", 50000)) as elsewhere:
        ok = elsewhere.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
        assert ok.status_code == 201


def test_failed_logins_are_throttled_per_address(control_plane: ControlPlane) -> None:
    cp = control_plane
    limit = 4 * cp.settings.login_max_failures
    for i in range(limit):
        cp.client.post("/api/v1/auth/login", json={"username": f"user{i}", "password": "x"})
    refused = cp.client.post("/api/v1/auth/login", json={"username": "fresh", "password": "x"})
    assert refused.status_code == 429


def test_tokens_are_stored_hashed_shown_once_and_revocable(control_plane: ControlPlane) -> None:
    cp = control_plane
    admin = cp.as_(cp.admin_token)
    created = cp.client.post("/api/v1/tokens", json={"name": "ci"}, headers=admin).json()
    secret = created["token"]
    assert cp.client.get("/api/v1/auth/whoami", headers=cp.as_(secret)).status_code == 200
    listed = cp.client.get("/api/v1/tokens", headers=admin).json()
    assert all("token" not in row for row in listed)
    with cp.database.read() as session:
        stored = session.get(ApiToken, created["id"])
        assert stored is not None and secret.split("_", 2)[2] not in stored.secret_hash
    assert cp.client.delete(f"/api/v1/tokens/{created['id']}", headers=admin).status_code == 200
    assert cp.client.get("/api/v1/auth/whoami", headers=cp.as_(secret)).status_code == 401


def test_expired_token_and_disabled_user_are_refused(control_plane: ControlPlane) -> None:
    cp = control_plane
    admin = cp.as_(cp.admin_token)
    cp.client.post("/api/v1/users", json={"username": "bob"}, headers=admin)
    bob_session = cp.as_(human_token(cp, "bob"))
    token = cp.client.post("/api/v1/tokens", json={"name": "b"}, headers=bob_session).json()
    bob = cp.as_(token["token"])
    assert cp.client.get("/api/v1/auth/whoami", headers=bob).status_code == 200
    with cp.database.engine.begin() as conn:
        past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        conn.execute(update(ApiToken).where(ApiToken.id == token["id"]).values(expires_at=past))
    cp.database.auth_cache.clear()  # a change behind the API's back: see the next test
    assert cp.client.get("/api/v1/auth/whoami", headers=bob).status_code == 401
    fresh = cp.client.post("/api/v1/tokens", json={"name": "c"}, headers=bob_session)
    assert (
        cp.client.patch("/api/v1/users/bob", json={"disabled": True}, headers=admin).status_code
        == 200
    )
    assert (
        cp.client.get("/api/v1/auth/whoami", headers=cp.as_(fresh.json()["token"])).status_code
        == 401
    )


def test_every_change_commits_with_its_audit_event(control_plane: ControlPlane) -> None:
    cp = control_plane
    admin = cp.as_(cp.admin_token)
    before = len(_actions(cp))
    assert (
        cp.client.post("/api/v1/projects", json={"name": "cardio"}, headers=admin).status_code
        == 201
    )
    assert _actions(cp)[before:] == ["project.create"]
    # A refused change leaves neither a row nor an event.
    again = cp.client.post("/api/v1/projects", json={"name": "cardio"}, headers=admin)
    assert again.status_code == 409 and "already exists" in again.json()["detail"]
    assert len(_actions(cp)) == before + 1
    report = cp.client.get("/api/v1/audit/verify", headers=admin).json()
    assert report["events"] == len(_actions(cp))


def test_a_change_without_an_event_is_refused(control_plane: ControlPlane) -> None:
    db = control_plane.database
    with pytest.raises(RuntimeError, match="without an audit event"), db.write(actor="t") as unit:
        unit.session.add(Project(name="silent"))
    with db.read() as session:
        assert session.scalars(select(Project).where(Project.name == "silent")).first() is None


def test_a_failing_audit_append_rolls_back_the_change(
    control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    cp = control_plane

    def broken(*_args: object, **_kwargs: object) -> None:
        raise OperationalError("INSERT INTO audit_events", {}, Exception("disk full"))

    monkeypatch.setattr(cp.database.audit, "append_in", broken)
    response = cp.client.post(
        "/api/v1/projects", json={"name": "lost"}, headers=cp.as_(cp.admin_token)
    )
    assert response.status_code == 503
    with cp.database.read() as session:
        assert session.scalars(select(Project).where(Project.name == "lost")).first() is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "ok", "extra": 1}, "body.extra"),
        ({"name": 5}, "body.name"),
        ({"name": "Bad Name!"}, "body.name"),
        ({}, "body.name"),
    ],
)
def test_bad_input_names_the_field(
    control_plane: ControlPlane, body: dict[str, object], field: str
) -> None:
    cp = control_plane
    response = cp.client.post("/api/v1/projects", json=body, headers=cp.as_(cp.admin_token))
    assert response.status_code == 422
    assert field in response.json()["detail"]


def test_malformed_json_and_oversized_bodies(control_plane: ControlPlane) -> None:
    cp = control_plane
    headers = {**cp.as_(cp.admin_token), "content-type": "application/json"}
    broken = cp.client.post("/api/v1/projects", content=b'{"name": ', headers=headers)
    assert broken.status_code == 422
    huge = json.dumps({"name": "x", "description": "a" * (2 << 20)})
    too_big = cp.client.post("/api/v1/projects", content=huge, headers=headers)
    assert too_big.status_code == 413 and "larger than" in too_big.json()["detail"]
    missing = cp.client.get("/api/v1/projects/nope", headers=cp.as_(cp.admin_token))
    assert missing.status_code == 404


def test_database_outage_gives_503_then_recovers(control_plane: ControlPlane) -> None:
    cp = control_plane
    engine = cp.database.engine
    down = {"value": True}

    def refuse(*_args: object, **_kwargs: object) -> None:
        if down["value"]:
            raise OperationalError("connect", {}, Exception("connection refused"))

    engine.dispose()
    event.listen(engine, "do_connect", refuse)
    try:
        admin = cp.as_(cp.admin_token)
        read = cp.client.get("/api/v1/projects", headers=admin)
        assert read.status_code == 503 and "nothing was changed" in read.json()["detail"]
        write = cp.client.post("/api/v1/projects", json={"name": "during"}, headers=admin)
        assert write.status_code == 503
        down["value"] = False
        assert cp.client.get("/api/v1/projects", headers=admin).status_code == 200
        names = [p["name"] for p in cp.client.get("/api/v1/projects", headers=admin).json()]
        assert "during" not in names
    finally:
        event.remove(engine, "do_connect", refuse)


def test_empty_policy_is_refused(control_plane: ControlPlane) -> None:
    cp = control_plane
    admin = cp.as_(cp.admin_token)
    cp.client.post("/api/v1/projects", json={"name": "gov"}, headers=admin)
    empty = cp.client.put(
        "/api/v1/projects/gov/policies/production", json={"document": {}}, headers=admin
    )
    assert empty.status_code == 422 and "body.document" in empty.json()["detail"]


def test_secrets_never_reach_logs_or_errors(
    control_plane: ControlPlane, caplog: pytest.LogCaptureFixture
) -> None:
    cp = control_plane
    created = cp.client.post(
        "/api/v1/users",
        json={"username": "eve", "password": "s3cret-passw0rd!"},
        headers=cp.as_(cp.admin_token),
    )
    assert created.status_code == 201 and "password" not in created.json()
    bad = cp.client.get("/api/v1/users", headers=cp.as_(cp.admin_token + "x"))
    assert cp.admin_token not in bad.text
    assert "s3cret-passw0rd!" not in caplog.text and cp.admin_token not in caplog.text
    with cp.database.engine.connect() as conn:
        dumped = " ".join(str(row) for row in conn.execute(text("SELECT * FROM users")))
    assert "s3cret-passw0rd!" not in dumped and "$argon2" in dumped


def test_changes_by_other_workers_apply_within_the_cache_ttl(control_plane: ControlPlane) -> None:
    """Another worker's revocation (simulated by a direct write) applies within the TTL."""
    cp = control_plane
    cp.database.auth_cache.ttl = 0.3
    admin = cp.as_(cp.admin_token)
    token = cp.client.post("/api/v1/tokens", json={"name": "w"}, headers=admin).json()
    headers = cp.as_(token["token"])
    assert cp.client.get("/api/v1/auth/whoami", headers=headers).status_code == 200
    with cp.database.engine.begin() as conn:
        now = dt.datetime.now(dt.UTC)
        conn.execute(update(ApiToken).where(ApiToken.id == token["id"]).values(revoked_at=now))
    time.sleep(0.4)
    assert cp.client.get("/api/v1/auth/whoami", headers=headers).status_code == 401


def test_role_changes_through_the_api_apply_at_once(
    control_plane: ControlPlane, role_tokens: dict[str, str]
) -> None:
    cp = control_plane
    engineer = cp.as_(role_tokens["ml-engineer"])
    body = smoke_spec()
    assert (
        cp.client.post("/api/v1/projects/p1/runs", json=body, headers=engineer).status_code == 201
    )
    demote = cp.client.put(
        "/api/v1/projects/p1/members/engineer",
        json={"role": "auditor"},
        headers=cp.as_(cp.admin_token),
    )
    assert demote.status_code == 200
    assert (
        cp.client.post("/api/v1/projects/p1/runs", json=body, headers=engineer).status_code == 403
    )


def test_run_for_a_cluster_without_agent_stays_queued_and_says_why(
    control_plane: ControlPlane, role_tokens: dict[str, str]
) -> None:
    cp = control_plane
    engineer = cp.as_(role_tokens["ml-engineer"])
    created = cp.client.post("/api/v1/projects/p1/runs", json=smoke_spec(), headers=engineer)
    assert created.status_code == 201
    run = created.json()
    assert run["status"] == "queued"
    assert (
        "has no agent yet" in run["status_reason"] and "bastion agent start" in run["status_reason"]
    )
    wrong_project = cp.client.post(
        "/api/v1/projects/p1/runs", json=smoke_spec(project="elsewhere"), headers=engineer
    )
    assert wrong_project.status_code == 422 and "spec.project" in wrong_project.json()["detail"]
    unknown_cluster = cp.client.post(
        "/api/v1/projects/p1/runs", json=smoke_spec(cluster="nowhere"), headers=engineer
    )
    assert unknown_cluster.status_code == 404 and "nowhere" in unknown_cluster.json()["detail"]


def test_malformed_names_in_paths_are_refused_before_any_lookup(
    control_plane: ControlPlane, role_tokens: dict[str, str]
) -> None:
    cp = control_plane
    admin = cp.as_(cp.admin_token)
    for method, path in (
        ("POST", "/api/v1/projects/p1/models/%3F/versions/1/evaluate"),
        ("GET", "/api/v1/projects/p1/datasets/Bad%20Name/versions"),
        ("GET", "/api/v1/projects/p1/models/" + "m" * 65 + "/versions"),
    ):
        response = cp.client.request(method, path, json={"evaluate": {}}, headers=admin)
        assert response.status_code == 422, path
        assert response.json()["errors"][0]["field"] == "path.name"
    missing = cp.client.get("/api/v1/projects/p1/models/ghost/versions", headers=admin)
    assert missing.status_code == 404


def test_a_registration_names_its_dataset_only_when_a_version_is_recorded(
    control_plane: ControlPlane,
) -> None:
    cp = control_plane
    admin = cp.as_(cp.admin_token)
    assert cp.client.post("/api/v1/projects", json={"name": "p1"}, headers=admin).is_success
    assert cp.client.post("/api/v1/clusters", json={"name": "c1"}, headers=admin).is_success
    queued = cp.client.post(
        "/api/v1/projects/p1/datasets/ghost/register",
        json={"cluster": "c1", "source": "missing.csv"},
        headers=admin,
    )
    assert queued.status_code == 201, queued.text
    # The run may fail (the file is missing): nothing named 'ghost' is left behind.
    assert cp.client.get("/api/v1/projects/p1/datasets", headers=admin).json() == []


def test_a_new_join_token_is_shown_once_and_audited_without_it(
    control_plane: ControlPlane,
) -> None:
    cp = control_plane
    admin = cp.as_(cp.admin_token)
    assert cp.client.post("/api/v1/clusters", json={"name": "c1"}, headers=admin).is_success
    minted = cp.client.post("/api/v1/clusters/c1/join-token", json={"hours": 2}, headers=admin)
    assert minted.status_code == 201 and minted.json()["cluster"] == "c1"
    token = minted.json()["join_token"]
    assert token.startswith("bstjoin_")
    missing = cp.client.post("/api/v1/clusters/nope/join-token", json={}, headers=admin)
    assert missing.status_code == 404
    actions = [e["action"] for e in cp.client.get("/api/v1/audit/events", headers=admin).json()]
    assert "cluster.join_token" in actions
    assert token not in json.dumps(cp.client.get("/api/v1/audit/events", headers=admin).json())
