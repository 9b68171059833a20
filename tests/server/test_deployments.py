"""Deployments and serving keys through the API; the serve job's key sync and audit upload."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from bastion.server.caller import Identity
from bastion.server.db.models import Alert, Deployment, Run
from bastion.server.services import deployments
from bastion.server.services.projects import get_project
from tests.server.conftest import ControlPlane, dashboard_login, form_value
from tests.server.test_evaluations import EVIDENCE, make_version


def _deploy(cp: ControlPlane, token: str, **body: Any) -> Any:
    payload = {"name": "d1", "model": "m@1", "cluster": "c1", "port": 9443, **body}
    return cp.client.post("/api/v1/projects/p1/deployments", json=payload, headers=cp.as_(token))


def _events(cp: ControlPlane, action: str) -> list[dict[str, Any]]:
    found = cp.client.get(
        "/api/v1/audit/events", params={"limit": 500}, headers=cp.as_(cp.admin_token)
    )
    return [e for e in found.json() if e["action"] == action]


def test_only_production_versions_deploy_unless_overridden_outside_production_projects(
    control_plane: ControlPlane, role_tokens: dict[str, str]
) -> None:
    cp = control_plane
    make_version(cp, evidence=EVIDENCE)
    refused = _deploy(cp, role_tokens["ml-engineer"])
    assert refused.status_code == 403 and "only a production version" in refused.json()["detail"]
    for role in ("reviewer", "auditor", "data-steward"):
        assert _deploy(cp, role_tokens[role], allow_unapproved=True).status_code == 403, role
    made = _deploy(cp, role_tokens["ml-engineer"], allow_unapproved=True)
    assert made.status_code == 201, made.text
    body = made.json()
    assert (
        body["unapproved"] is True and body["status"] == "starting" and len(body["replicas"]) == 1
    )
    graph = cp.client.get(
        "/api/v1/projects/p1/lineage", params={"node": "model:m@1"}, headers=cp.as_(cp.admin_token)
    )
    assert graph.status_code == 200, graph.text
    relations = {(e["from"], e["to"], e["relation"]) for e in graph.json()["edges"]}
    assert ("model:m@1", "deployment:d1", "deployed") in relations
    assert ("model:m@1", f"run:{body['run_id']}", "served") in relations
    created = _events(cp, "deployment.created")
    assert created and created[-1]["details"]["unapproved"] is True  # the override is audited
    assert _deploy(cp, role_tokens["ml-engineer"], allow_unapproved=True).status_code == 409
    # A project with a production policy refuses the override.
    policy = {"document": {"min_accuracy": 0.5}}
    put = cp.client.put(
        "/api/v1/projects/p1/policies/production", json=policy, headers=cp.as_(cp.admin_token)
    )
    assert put.status_code == 200, put.text
    again = _deploy(cp, role_tokens["ml-engineer"], name="d2", allow_unapproved=True)
    assert again.status_code == 403 and "production policy" in again.json()["detail"]
    # More than one replica needs Redis for the shared limits.
    many = _deploy(cp, cp.admin_token, name="d3", allow_unapproved=True, replicas=2)
    assert many.status_code == 422 and "Redis" in many.json()["detail"]
    # Serve jobs come only through deployments.
    spec = {
        "name": "s",
        "project": "p1",
        "cluster": "c1",
        "job": {"type": "serve", "deployment": "x", "model": "m@1"},
    }
    direct = cp.client.post("/api/v1/projects/p1/runs", json=spec, headers=cp.as_(cp.admin_token))
    assert direct.status_code == 422 and "bastion deploy create" in direct.text


def test_serving_keys_are_shown_once_listed_without_secrets_and_revoked(
    control_plane: ControlPlane, role_tokens: dict[str, str]
) -> None:
    cp = control_plane
    make_version(cp, evidence=EVIDENCE)
    assert _deploy(cp, cp.admin_token, allow_unapproved=True).status_code == 201
    keys = "/api/v1/projects/p1/deployments/d1/keys"
    body = {"scopes": ["predict"], "rate": 50, "quota": 1000, "expires_in_seconds": 3600}
    assert (
        cp.client.post(keys, json=body, headers=cp.as_(role_tokens["auditor"])).status_code == 403
    )
    made = cp.client.post(keys, json=body, headers=cp.as_(role_tokens["ml-engineer"]))
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    assert token.startswith("bsk_")
    listed = cp.client.get(keys, headers=cp.as_(role_tokens["auditor"]))
    assert listed.status_code == 200 and token.split("_", 2)[2] not in listed.text
    assert "secret_hash" not in listed.text and listed.json()[0]["rate"] == 50
    bad = cp.client.post(keys, json={"scopes": ["admin"]}, headers=cp.as_(cp.admin_token))
    assert bad.status_code == 422
    key_id = made.json()["id"]
    revoked = cp.client.post(f"{keys}/{key_id}/revoke", headers=cp.as_(cp.admin_token))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]


def test_the_serve_job_syncs_keys_and_its_findings_become_alerts(
    control_plane: ControlPlane, role_tokens: dict[str, str]
) -> None:
    cp = control_plane
    make_version(cp, evidence=EVIDENCE)
    run_id = _deploy(cp, cp.admin_token, allow_unapproved=True).json()["run_id"]
    cp.client.post(
        "/api/v1/projects/p1/deployments/d1/keys",
        json={"scopes": ["predict"]},
        headers=cp.as_(cp.admin_token),
    )
    job = Identity(
        user_id="job",
        username="jobs-c1",
        kind="job",
        is_admin=False,
        scopes=frozenset({"runs:report", f"run:{run_id}:1"}),
        token_id="t",
    )
    stranger = Identity(
        user_id="job",
        username="jobs-c1",
        kind="job",
        is_admin=False,
        scopes=frozenset({"runs:report", "run:other:1"}),
        token_id="t",
    )
    with cp.database.write(actor="agent:test") as unit:
        run = unit.session.get(Run, run_id)
        assert run is not None
        run.status, run.attempt = "running", 1
        unit.record("run.leased", f"run:{run_id}", {"attempt": 1})  # as the agent's lease does
    with cp.database.read() as session:
        project = get_project(session, "p1")
        records = deployments.key_records(session, project=project, run_id=run_id, caller=job)
        assert len(records) == 1 and len(records[0]["secret_hash"]) == 64
        assert records[0]["owner"]  # who minted it: extraction is judged per owner too
        try:
            deployments.key_records(session, project=project, run_id=run_id, caller=stranger)
        except Exception as exc:
            assert "own run" in str(exc)
        else:
            raise AssertionError("a job token of another run read the keys")
    event = {
        "endpoint": "predict",
        "key_id": records[0]["id"],
        "input_sha256": "ab" * 32,
        "decision": "served",
        "status": 200,
        "flags": [],
        "instances": 2,
        "raw": "secret row",
    }
    finding = {"kind": "extraction", "key_id": records[0]["id"], "reason": "PRADA", "queries": 256}
    with cp.database.write(actor="job:test") as unit:
        project = get_project(unit.session, "p1")
        count = deployments.ingest_audit(
            unit, project=project, run_id=run_id, events=[event], findings=[finding], caller=job
        )
    assert count == 1
    logged = _events(cp, "serve.request")
    assert len(logged) == 1 and logged[0]["details"]["input_sha256"] == "ab" * 32
    assert "raw" not in logged[0]["details"]  # only the listed fields reach the audit log
    with cp.database.read() as session:
        alerts = session.scalars(select(Alert).where(Alert.kind == "serve_extraction")).all()
        assert len(alerts) == 1 and alerts[0].details["deployment"] == "d1"
        assert session.scalars(select(Deployment)).one().replica_runs == [run_id]


def test_the_deployment_page_lists_keys_and_revokes_and_stops_through_forms(
    control_plane: ControlPlane, role_tokens: dict[str, str], dashboard_users: list[str]
) -> None:
    cp = control_plane
    make_version(cp, evidence=EVIDENCE)
    assert _deploy(cp, role_tokens["ml-engineer"], allow_unapproved=True).status_code == 201
    keys = "/api/v1/projects/p1/deployments/d1/keys"
    made = cp.client.post(
        keys,
        json={"scopes": ["predict"], "rate": 5, "name": "ward-app"},
        headers=cp.as_(role_tokens["ml-engineer"]),
    ).json()
    secret = made["token"].split("_", 2)[2]
    engineer, auditor = dashboard_login(cp, "engineer"), dashboard_login(cp, "auditor")
    assert 'href="/ui/p/p1/deployments/d1"' in engineer.get("/ui/p/p1").text
    page = engineer.get("/ui/p/p1/deployments/d1").text
    assert "m@1" in page and "without a production approval" in page
    assert made["id"] in page and "ward-app" in page and secret not in page
    revoke = f"/ui/p/p1/deployments/d1/keys/{made['id']}/revoke"
    assert f'action="{revoke}"' in page and 'id="stop"' in page
    # The auditor reads the page but gets neither button, and the forms are refused.
    seen = auditor.get("/ui/p/p1/deployments/d1").text
    assert made["id"] in seen and "/revoke" not in seen and 'id="stop"' not in seen
    for path in (revoke, "/ui/p/p1/deployments/d1/stop"):
        assert auditor.post(path, data={"csrf": form_value(seen, "csrf")}).status_code == 403
    assert engineer.get("/ui/p/p1/deployments/nope").status_code == 404
    csrf = form_value(page, "csrf")
    assert engineer.post(revoke, data={"csrf": csrf}).status_code == 303
    listed = cp.client.get(keys, headers=cp.as_(cp.admin_token)).json()
    assert listed[0]["revoked_at"] is not None
    assert [e["details"]["key"] for e in _events(cp, "serving_key.revoked")] == [made["id"]]
    page = engineer.get("/ui/p/p1/deployments/d1").text
    assert "/revoke" not in page and "revoked" in page
    stopped = engineer.post("/ui/p/p1/deployments/d1/stop", data={"csrf": csrf})
    assert stopped.status_code == 303
    page = engineer.get("/ui/p/p1/deployments/d1").text
    assert "Stopped" in page and 'id="stop"' not in page
    with cp.database.read() as session:
        assert session.scalars(select(Deployment)).one().stopped_at is not None
