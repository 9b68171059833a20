"""The dashboard's pages: what each role sees and may do, and promotion through the browser."""

from __future__ import annotations

import datetime as dt
import re
import threading
from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import select

from bastion.server.db.models import ModelVersion, Project, Run, RunEvent, RunLog, RunMetric
from bastion.server.permissions import PERMISSIONS, Permission, Role
from bastion.server.web import PUBLIC_PAGES, is_dashboard
from bastion.server.web.charts import HEIGHT, WIDTH, line_chart
from tests.server.conftest import ControlPlane, dashboard_login, form_value, smoke_spec
from tests.server.test_evaluations import EVIDENCE, make_version
from tests.server.test_permissions import PATH_VALUES

ROLE_OF = {
    "admin": Role.ADMIN,
    "steward": Role.DATA_STEWARD,
    "engineer": Role.ML_ENGINEER,
    "reviewer": Role.REVIEWER,
    "auditor": Role.AUDITOR,
}
POLICY = {"min_accuracy": 0.5, "require_signature": True, "approvals": 1}


def _dashboard_routes(cp: ControlPlane) -> list[tuple[str, str, Permission | None]]:
    from bastion.server.deps import route_permission

    found = []
    for context in iter_route_contexts(cp.app.routes):
        route, path = context.original_route, str(context.path)
        if not isinstance(route, APIRoute) or not (is_dashboard(path) or path == "/"):
            continue
        permissions = {
            p for dep in route.dependant.dependencies if (p := route_permission(dep.call))
        }
        assert len(permissions) <= 1, f"{path} declares several permissions"
        for method in context.methods or ():
            found.append((method, path, next(iter(permissions), None)))
    return found


def _url(path: str, values: dict[str, str]) -> str:
    return re.sub(r"{(\w+)}", lambda m: values[m.group(1)], path)


def seed_run(cp: ControlPlane, *, name: str = "smoke", log: str = "epoch 1 done") -> str:
    """A queued run of p1 (through the API) with stages, log lines and a metric series."""
    created = cp.client.post(
        "/api/v1/projects/p1/runs",
        json={**smoke_spec(), "name": name},
        headers=cp.as_(cp.admin_token),
    )
    assert created.status_code == 201, created.text
    run_id: str = created.json()["id"]
    with cp.database.write(actor="agent:test") as unit:
        unit.session.add_all(
            [
                RunEvent(run_id=run_id, stage="train", status="running", message=log),
                RunLog(run_id=run_id, attempt=1, line=log),
                *(
                    RunMetric(run_id=run_id, name="loss", step=step, value=1.0 / step)
                    for step in range(1, 6)
                ),
            ]
        )
        unit.record("run.report", f"run:{run_id}", {"seeded": True})
    return run_id


def test_every_dashboard_route_is_public_or_declares_one_permission(
    control_plane: ControlPlane,
) -> None:
    routes = _dashboard_routes(control_plane)
    assert len(routes) >= 14
    for method, path, permission in routes:
        if (method, path) in PUBLIC_PAGES:
            assert permission is None
        else:
            assert permission in PERMISSIONS, f"{method} {path} has no permission"


def test_each_role_sees_exactly_the_pages_the_table_allows(
    control_plane: ControlPlane, dashboard_users: list[str]
) -> None:
    cp = control_plane
    make_version(cp, evidence=EVIDENCE)
    run_id = seed_run(cp)
    values = {**PATH_VALUES, "run_id": run_id, "name": "m", "version": "1"}
    pages = [
        (path, permission)
        for method, path, permission in _dashboard_routes(cp)
        if method == "GET" and permission is not None and "{name}" not in path
    ] + [
        ("/ui/p/{project}/models/{name}/{version}", Permission.MODELS_READ),
    ]
    for username in dashboard_users:
        browser = dashboard_login(cp, username)
        for path, permission in pages:
            response = browser.get(_url(path, values))
            if ROLE_OF[username] in PERMISSIONS[permission]:
                assert response.status_code == 200, f"{username} {path}: {response.text[:300]}"
            else:
                assert response.status_code == 403, f"{username} must be refused {path}"
                assert "is not allowed for" in response.text
    # Somebody without a session is sent to log in, and comes back afterwards.
    anonymous = dashboard_login(cp, "auditor")
    anonymous.cookies.clear()
    refused = anonymous.get("/ui/p/p1/runs")
    assert refused.status_code == 303
    assert refused.headers["location"] == "/ui/login?after=/ui/p/p1/runs"


def test_the_run_page_shows_stages_log_and_metric_charts(
    control_plane: ControlPlane, dashboard_users: list[str]
) -> None:
    cp = control_plane
    run_id = seed_run(cp, log="epoch 3: loss 0.125")
    browser = dashboard_login(cp, "auditor")
    page = browser.get(f"/ui/p/p1/runs/{run_id}")
    assert page.status_code == 200
    assert "epoch 3: loss 0.125" in page.text and "queued" in page.text
    assert 'aria-label="loss"' in page.text and "last 0.2" in page.text
    live = browser.get(f"/ui/p/p1/runs/{run_id}?part=live")
    assert live.status_code == 200 and 'data-final="false"' in live.text
    assert "<html" not in live.text  # a fragment the page swaps in
    with cp.database.write(actor="agent:test") as unit:
        unit.session.get(Run, run_id).status = "succeeded"  # type: ignore[union-attr]
        unit.record("run.result", f"run:{run_id}", {"status": "succeeded"})
    assert 'data-final="true"' in browser.get(f"/ui/p/p1/runs/{run_id}?part=live").text
    listed = browser.get("/ui/p/p1/runs")
    assert run_id[:12] in listed.text and "train" in listed.text  # status and last stage


def test_line_chart_scales_the_series_into_the_box() -> None:
    chart = line_chart("loss", [(1, 4.0), (2, 2.0), (3, 1.0)])
    xs, ys = zip(*(map(float, p.split(",")) for p in chart.points.split()), strict=True)
    assert xs[0] < xs[1] < xs[2] and min(xs) >= 0 and max(xs) <= WIDTH
    assert ys[0] < ys[1] < ys[2] and min(ys) >= 0 and max(ys) <= HEIGHT  # falling loss
    assert (chart.low, chart.high, chart.last, chart.count) == (1.0, 4.0, 1.0, 3)
    with pytest.raises(ValueError, match="no samples"):
        line_chart("empty", [])


def test_the_run_page_folds_checkpoints_and_labels_its_chart_axes(
    control_plane: ControlPlane, dashboard_users: list[str]
) -> None:
    cp = control_plane
    run_id = seed_run(cp)
    with cp.database.write(actor="agent:test") as unit:
        unit.session.add_all(
            [
                *(
                    RunEvent(
                        run_id=run_id, stage="checkpoint", status="running", message=f"step {s}"
                    )
                    for s in range(1, 13)
                ),
                RunEvent(run_id=run_id, stage="train", status="succeeded", message="done"),
                *(
                    RunMetric(run_id=run_id, name="accuracy", step=s, value=s / 7)
                    for s in range(1, 7)
                ),
            ]
        )
        unit.record("run.report", f"run:{run_id}", {"seeded": True})
    page = dashboard_login(cp, "auditor").get(f"/ui/p/p1/runs/{run_id}").text
    stages = page.split("<h2>Stages</h2>", 1)[1].split("</section>", 1)[0]
    assert stages.count("<details>") == 1 and "12 checkpoints; latest: step 12" in stages
    assert stages.count(">checkpoint</td>") == 1  # one line; the twelve inside it
    assert all(f"<td>step {s}</td>" in stages for s in range(1, 13))
    order = [stages.index(text) for text in ("epoch 1 done", "12 checkpoints", ">done</td>")]
    assert order == sorted(order)  # the folded line stands where the latest checkpoint came
    charts = page.split("<h2>Metrics</h2>", 1)[1]
    assert charts.count(">step</text>") == 2  # accuracy and loss
    assert ">accuracy (fraction)</text>" in charts and ">loss</text>" in charts
    assert "last 0.8571 (range 0.1429 to 0.8571, steps 1 to 6)" in charts  # 4 digits


def test_line_chart_ticks_are_round_and_steps_whole() -> None:
    chart = line_chart("accuracy", [(1, 0.5), (2, 0.6), (3, 0.9)])
    assert [t.label for t in chart.x_ticks] == ["1", "2", "3"]
    assert [t.label for t in chart.y_ticks] == ["0.5", "0.6", "0.7", "0.8", "0.9"]
    assert chart.y_label == "accuracy (fraction)"
    ats = [t.at for t in chart.y_ticks]
    assert ats == sorted(ats, reverse=True)  # higher values higher up
    assert ats[0] == chart.box.bottom and ats[-1] == chart.box.top
    assert line_chart("grad_norm", [(1, 2.0)]).y_label == "grad_norm"  # unknown: unitless


def _version_page(browser: Any) -> str:
    page = browser.get("/ui/p/p1/models/m/1")
    assert page.status_code == 200
    return str(page.text)


def _stage(cp: ControlPlane) -> str:
    with cp.database.read() as session:
        return session.scalars(select(ModelVersion.stage)).one()


def test_promotion_in_the_dashboard_goes_through_gates_and_separation_of_duties(
    control_plane: ControlPlane, dashboard_users: list[str]
) -> None:
    cp = control_plane
    make_version(cp, evidence=EVIDENCE)  # registered by the engineer's run
    put = cp.client.put(
        "/api/v1/projects/p1/policies/production",
        json={"document": POLICY},
        headers=cp.as_(cp.admin_token),
    )
    assert put.status_code == 200, put.text
    engineer, reviewer, auditor = (
        dashboard_login(cp, u) for u in ("engineer", "reviewer", "auditor")
    )
    page = _version_page(engineer)
    assert 'id="promote"' in page and 'id="approve"' not in page
    assert "Robustness curve" in page and "data:image/svg+xml;base64," in page  # the card
    assert "ML01" in page  # the scorecard
    promoted = engineer.post(
        "/ui/p/p1/models/m/1/promote",
        data={"to": "production", "csrf": form_value(page, "csrf")},
    )
    assert promoted.status_code == 303
    page = _version_page(engineer)
    assert "pending" in page and "min_accuracy" in page and 'id="approve"' not in page
    # The engineer trained it and asked for it: even a forged form is refused.
    forged = engineer.post("/ui/p/p1/models/m/1/approve", data={"csrf": form_value(page, "csrf")})
    assert forged.status_code == 403 and "approvals:decide is not allowed" in forged.text
    # The auditor sees the request read-only: no button, and the form is refused.
    page = _version_page(auditor)
    assert 'id="approve"' not in page and "your role cannot approve" in page
    refused = auditor.post("/ui/p/p1/models/m/1/approve", data={"csrf": form_value(page, "csrf")})
    assert refused.status_code == 403 and _stage(cp) == "none"
    # The reviewer approves.
    page = _version_page(reviewer)
    assert 'id="approve"' in page and 'id="reject"' in page
    approved = reviewer.post(
        "/ui/p/p1/models/m/1/approve",
        data={"comment": "gates pass", "csrf": form_value(page, "csrf")},
    )
    assert approved.status_code == 303 and _stage(cp) == "production"
    overview = auditor.get("/ui/p/p1").text
    assert "m@1" in overview and "Nothing waits for a decision" in overview
    audit = auditor.get("/ui/audit", params={"q": "approv"}).text
    assert "gates pass" in audit and "user:reviewer" in audit
    assert "Chain verified" in audit
    denied = auditor.get("/ui/audit", params={"q": "access.denied"}).text
    assert "user:auditor" in denied and "user:engineer" in denied


def test_gate_failures_and_bad_forms_are_shown_not_hidden(
    control_plane: ControlPlane, dashboard_users: list[str]
) -> None:
    cp = control_plane
    make_version(cp, evidence={**EVIDENCE, "test_accuracy": 0.3})
    engineer = dashboard_login(cp, "engineer")
    page = _version_page(engineer)
    missing = engineer.post(
        "/ui/p/p1/models/m/1/promote", data={"to": "production", "csrf": form_value(page, "csrf")}
    )
    assert missing.status_code == 409 and "has no policy &#39;production&#39;" in missing.text
    bad = engineer.post(
        "/ui/p/p1/models/m/1/promote", data={"to": "heaven", "csrf": form_value(page, "csrf")}
    )
    assert bad.status_code == 422 and "to:" in bad.text
    cp.client.put(
        "/api/v1/projects/p1/policies/production",
        json={"document": POLICY},
        headers=cp.as_(cp.admin_token),
    )
    engineer.post(
        "/ui/p/p1/models/m/1/promote", data={"to": "production", "csrf": form_value(page, "csrf")}
    )
    page = _version_page(engineer)
    assert "failed" in page and "&gt;= 0.5" in page and 'class="status status-fail"' in page
    assert 'id="promote"' in page  # a failed request can be asked again once fixed


def test_the_audit_page_flags_a_broken_chain_and_exports_it(
    control_plane: ControlPlane, dashboard_users: list[str]
) -> None:
    cp = control_plane
    auditor = dashboard_login(cp, "auditor")
    exported = auditor.get("/ui/audit/export")
    assert exported.status_code == 200 and "attachment" in exported.headers["content-disposition"]
    lines = exported.text.splitlines()
    assert len(lines) > 5 and all(line.startswith('{"') for line in lines)
    with cp.database.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE audit_events SET actor = 'user:mallory' WHERE seq = 2")
    cp.database.audit_whole_every = dt.timedelta(0)  # the hourly pass from the start is due
    page = auditor.get("/ui/audit")
    assert page.status_code == 200 and "Chain verification FAILED" in page.text
    assert "2" in page.text.split("FAILED", 1)[1][:200]


def test_compliance_reports_render_for_auditors(
    control_plane: ControlPlane, dashboard_users: list[str]
) -> None:
    cp = control_plane
    auditor = dashboard_login(cp, "auditor")
    hipaa = auditor.get("/ui/compliance")
    assert hipaa.status_code == 200 and "164.312(b)" in hipaa.text and "pass" in hipaa.text
    gdpr = auditor.get("/ui/compliance", params={"framework": "gdpr"})
    assert gdpr.status_code == 200 and "Art. 30" in gdpr.text
    assert auditor.get("/ui/compliance", params={"framework": "sox"}).status_code == 422
    with cp.database.read() as session:
        assert session.scalars(select(Project.name)).all() == ["p1"]


def test_the_audit_page_resumes_from_a_verified_checkpoint_and_rereads_it_all_in_time(
    control_plane: ControlPlane, dashboard_users: list[str]
) -> None:
    cp = control_plane
    auditor = dashboard_login(cp, "auditor")

    def status() -> str:
        page: str = auditor.get("/ui/audit").text
        return page.split('id="chain-status"', 1)[1].split("<form", 1)[0]

    def tamper(seq: int, actor: str) -> str:
        with cp.database.engine.begin() as conn:
            was = conn.exec_driver_sql(f"SELECT actor FROM audit_events WHERE seq = {seq}")
            conn.exec_driver_sql(f"UPDATE audit_events SET actor = '{actor}' WHERE seq = {seq}")
            return str(was.scalar_one())

    def new_events() -> None:
        for name in ("q1", "q2"):
            created = cp.client.post(
                "/api/v1/projects",
                json={"name": f"{name}-{cp.database.audit.count()}"},
                headers=cp.as_(cp.admin_token),
            )
            assert created.status_code == 201

    signed = cp.database.audit.checkpoint()  # a signed checkpoint to resume from
    assert "Chain verified" in status()  # resumed from what the start-up pass verified
    new_events()
    resumed = status()
    assert f"checked the events after the signed checkpoint #{signed.seq + 1}" in resumed
    assert "after 60 minutes" in resumed
    # A change before the checkpoint waits for the next verification from the start...
    original = tamper(2, "user:mallory")
    assert "Chain verified" in status()
    cp.database.audit_whole_every = dt.timedelta(0)
    assert "Chain verification FAILED" in status()
    tamper(2, original)
    cp.database.audit_whole_every = dt.timedelta(hours=1)
    assert "Chain verified" in status()
    # ...while a change after it is found on the next view.
    new_events()
    head = cp.database.audit.count()
    assert "checked the events after" in status()
    tamper(head, "user:mallory")
    failed = status()
    assert "Chain verification FAILED" in failed and f"seq {head}" in failed


def test_a_due_verification_from_the_start_runs_beside_the_page(
    control_plane: ControlPlane, dashboard_users: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long chain takes seconds to read from its first event: the page does not wait for
    it, it shows the shorter check, and the next view shows what the long one found."""
    cp = control_plane
    auditor = dashboard_login(cp, "auditor")
    cp.database.audit.checkpoint()
    assert "Chain verified" in auditor.get("/ui/audit").text
    release = threading.Event()
    verify = cp.database.audit.verify

    def slow(**kwargs: Any) -> Any:
        if kwargs.get("since") is None:  # the pass from the first event
            release.wait(60)
        return verify(**kwargs)

    monkeypatch.setattr(cp.database.audit, "verify", slow)
    with cp.database.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE audit_events SET actor = 'user:mallory' WHERE seq = 2")
    cp.database.audit_whole_every = dt.timedelta(0)
    meanwhile = auditor.get("/ui/audit").text
    assert "Chain verified" in meanwhile and "checked the events after" in meanwhile
    assert "A newer verification is running in the background" in meanwhile
    release.set()
    cp.database.start_verification().join()
    assert "Chain verification FAILED" in auditor.get("/ui/audit").text


def test_the_policies_page_shows_every_gate_of_every_policy(
    control_plane: ControlPlane, dashboard_users: list[str]
) -> None:
    cp = control_plane
    reviewer = dashboard_login(cp, "reviewer")
    assert "No policy yet" in reviewer.get("/ui/p/p1/policies").text
    document = {
        "min_accuracy": 0.9,
        "min_robust_accuracy": {"eps": 0.1, "value": 0.5},
        "require_signature": True,
    }
    saved = cp.client.put(
        "/api/v1/projects/p1/policies/production",
        json={"document": document},
        headers=cp.as_(cp.admin_token),
    )
    assert saved.status_code == 200, saved.text
    page = reviewer.get("/ui/p/p1/policies").text
    assert 'href="/ui/p/p1/policies"' in page and 'id="policy-production"' in page
    gates = re.findall(r"<tr><td>(\w+)</td><td>([^<]*)</td></tr>", page)
    assert gates == [
        ("min_accuracy", "0.9"),
        ("min_robust_accuracy", "attack pgd, eps 0.1, value 0.5"),
        ("require_signature", "True"),
        ("approvals", "1 (the default)"),
    ]
