"""Insider-threat alerts: self-approval, access outside one's projects, repeated denials,
export volume; stored, listed, acknowledged and audited."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from bastion.server.db.models import Cluster, Project, Run, User
from bastion.server.services.alerts import EXPORT_FLOOR, check_export_volume, raise_alert
from tests.server.conftest import ControlPlane, dashboard_login, form_value
from tests.server.test_evaluations import EVIDENCE, make_version


def _alerts(cp: ControlPlane, token: str, **params: Any) -> Any:
    return cp.client.get("/api/v1/alerts", params=params, headers=cp.as_(token))


def test_self_approval_and_outsiders_raise_alerts_that_auditors_see(
    control_plane: ControlPlane, role_tokens: dict[str, str]
) -> None:
    cp = control_plane
    admin = cp.as_(cp.admin_token)
    make_version(cp, evidence=EVIDENCE)
    assert (
        cp.client.put(
            "/api/v1/projects/p1/policies/production",
            json={"document": {"require_signature": True}},
            headers=admin,
        ).status_code
        == 200
    )
    engineer = role_tokens["ml-engineer"]
    opened = cp.client.post(
        "/api/v1/projects/p1/models/m/versions/1/promote",
        json={"to": "production"},
        headers=cp.as_(engineer),
    )
    assert opened.json()["status"] == "pending"
    cp.client.put("/api/v1/projects/p1/members/engineer", json={"role": "reviewer"}, headers=admin)
    own = cp.client.post(
        "/api/v1/projects/p1/models/m/versions/1/approve", json={}, headers=cp.as_(engineer)
    )
    assert own.status_code == 403
    # A data steward of p1 reaching into a project it is not a member of.
    assert cp.client.post("/api/v1/projects", json={"name": "p2"}, headers=admin).status_code == 201
    outside = cp.client.get("/api/v1/projects/p2/runs", headers=cp.as_(role_tokens["data-steward"]))
    assert outside.status_code == 403
    listed = _alerts(cp, role_tokens["auditor"])
    assert listed.status_code == 200
    kinds = {(a["kind"], a["actor"], a["project"]) for a in listed.json()}
    assert kinds == {
        ("self_approval", "user:engineer", "p1"),
        ("outside_projects", "user:steward", "p2"),
    }
    assert _alerts(cp, engineer).status_code == 403  # and that refusal is recorded too
    events = cp.client.get("/api/v1/audit/events?limit=200", headers=admin).json()
    denied = [e for e in events if e["action"] == "access.denied"]
    assert {e["actor"] for e in denied} == {"user:engineer", "user:steward"}
    assert sum(e["action"] == "alert.raised" for e in events) == 2


def test_repeated_denials_raise_one_alert_and_acknowledging_is_audited(
    control_plane: ControlPlane, role_tokens: dict[str, str]
) -> None:
    cp = control_plane
    auditor = cp.as_(role_tokens["auditor"])
    for _ in range(7):  # an auditor trying to change a policy, again and again
        refused = cp.client.put(
            "/api/v1/projects/p1/policies/production",
            json={"document": {"approvals": 0}},
            headers=auditor,
        )
        assert refused.status_code == 403
    found = _alerts(cp, cp.admin_token).json()
    assert [(a["kind"], a["actor"]) for a in found] == [("repeated_denials", "user:auditor")]
    assert found[0]["details"]["denials"] == 5
    alert_id = found[0]["id"]
    assert (
        cp.client.post(
            f"/api/v1/alerts/{alert_id}/acknowledge", json={"comment": "x"}, headers=auditor
        ).status_code
        == 403
    )
    done = cp.client.post(
        f"/api/v1/alerts/{alert_id}/acknowledge",
        json={"comment": "training on the new policy screen"},
        headers=cp.as_(cp.admin_token),
    )
    assert done.status_code == 200 and done.json()["acknowledged_by"] == "user:admin"
    twice = cp.client.post(
        f"/api/v1/alerts/{alert_id}/acknowledge", json={}, headers=cp.as_(cp.admin_token)
    )
    assert twice.status_code == 409
    assert _alerts(cp, cp.admin_token).json() == []
    assert len(_alerts(cp, cp.admin_token, all="true").json()) == 1


def test_exports_far_above_a_users_baseline_raise_an_alert(
    control_plane: ControlPlane, role_tokens: dict[str, str]
) -> None:
    cp = control_plane
    with cp.database.write(actor="user:engineer") as unit:
        project = unit.session.scalars(select(Project).where(Project.name == "p1")).one()
        cluster = unit.session.scalars(select(Cluster).where(Cluster.name == "c1")).one()
        engineer = unit.session.scalars(select(User.id).where(User.username == "engineer")).one()

        def export() -> None:
            unit.session.add(
                Run(
                    project_id=project.id,
                    cluster_id=cluster.id,
                    name="export",
                    spec={"job": {"type": "export-model"}},
                    created_by=engineer,
                )
            )
            unit.session.flush()
            unit.record("run.create", "run:export")
            check_export_volume(unit, actor="user:engineer", user_id=engineer, project="p1")

        for _ in range(EXPORT_FLOOR - 1):
            export()
    assert _alerts(cp, cp.admin_token).json() == []  # within the floor
    with cp.database.write(actor="user:engineer") as unit:
        export()
    found = _alerts(cp, cp.admin_token).json()
    assert [a["kind"] for a in found] == ["export_volume"]
    assert found[0]["details"]["exports_last_day"] == EXPORT_FLOOR


def _raise(cp: ControlPlane, *, actor: str, project: str | None) -> str:
    with cp.database.write(actor="system") as unit:
        alert = raise_alert(
            unit, kind="export_volume", actor=actor, project=project, details={"exports": 40}
        )
        assert alert is not None
        return alert.id


def test_nobody_acknowledges_an_alert_about_themselves(control_plane: ControlPlane) -> None:
    cp = control_plane
    admin = cp.as_(cp.admin_token)
    alert_id = _raise(cp, actor="user:admin", project=None)
    own = cp.client.post(f"/api/v1/alerts/{alert_id}/acknowledge", json={}, headers=admin)
    assert own.status_code == 403 and "separation of duties" in own.json()["detail"]
    open_alerts = {(a["kind"], a["actor"]) for a in _alerts(cp, cp.admin_token).json()}
    # Still open, and the attempt is an alert of its own.
    assert open_alerts == {("export_volume", "user:admin"), ("self_approval", "user:admin")}


def test_admins_acknowledge_a_projects_alerts_in_the_dashboard(
    control_plane: ControlPlane, dashboard_users: list[str]
) -> None:
    cp = control_plane
    about_engineer = _raise(cp, actor="user:engineer", project="p1")
    about_admin = _raise(cp, actor="user:admin", project="p1")
    assert cp.client.post(
        "/api/v1/projects", json={"name": "p2"}, headers=cp.as_(cp.admin_token)
    ).is_success
    elsewhere = _raise(cp, actor="user:steward", project="p2")
    admin, auditor = dashboard_login(cp, "admin"), dashboard_login(cp, "auditor")
    page = admin.get("/ui/p/p1").text
    assert f'action="/ui/p/p1/alerts/{about_engineer}/acknowledge"' in page
    assert "exports: 40" in page
    assert f"/alerts/{about_admin}/acknowledge" not in page and "This alert is about you" in page
    assert elsewhere not in page
    csrf = form_value(page, "csrf")
    # The auditor reads alerts but may not acknowledge them: no button, and the form is refused.
    seen = auditor.get("/ui/p/p1").text
    assert about_engineer in seen and "/acknowledge" not in seen
    refused = auditor.post(
        f"/ui/p/p1/alerts/{about_engineer}/acknowledge",
        data={"csrf": form_value(seen, "csrf")},
    )
    assert refused.status_code == 403
    # Another project's alert is not found from p1's pages; one's own alert is refused.
    other = admin.post(f"/ui/p/p1/alerts/{elsewhere}/acknowledge", data={"csrf": csrf})
    assert other.status_code == 404 and f"alert {elsewhere} does not exist" in other.text
    own = admin.post(f"/ui/p/p1/alerts/{about_admin}/acknowledge", data={"csrf": csrf})
    assert own.status_code == 403 and "separation of duties" in own.text
    done = admin.post(
        f"/ui/p/p1/alerts/{about_engineer}/acknowledge",
        data={"comment": "bulk export agreed with the DPO", "csrf": csrf},
    )
    assert done.status_code == 303 and done.headers["location"] == "/ui/p/p1"
    assert f"alert-{about_engineer}" not in admin.get("/ui/p/p1").text
    listed = _alerts(cp, cp.admin_token, all="true").json()
    acknowledged = {a["id"]: a["acknowledged_by"] for a in listed}
    assert acknowledged[about_engineer] == "user:admin"
    assert acknowledged[about_admin] is None and acknowledged[elsewhere] is None
    events = cp.client.get("/api/v1/audit/events?limit=200", headers=cp.as_(cp.admin_token))
    notes = [e["details"].get("note") for e in events.json() if e["action"] == "alert.acknowledged"]
    assert notes == ["bulk export agreed with the DPO"]
