"""Dashboard security: cookie flags, CSRF, session fixation, logout, XSS escaping, CSP."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from bastion.server.db.models import Approval, RunLog
from bastion.server.web.session import LOGIN_COOKIE, SESSION_COOKIE
from tests.server.conftest import (
    PASSWORD,
    ControlPlane,
    dashboard_login,
    form_value,
    post_login,
    web_client,
)
from tests.server.test_dashboard import POLICY, seed_run
from tests.server.test_evaluations import EVIDENCE, make_version


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: these checks are about HTTP, not the database (the pages run on
    PostgreSQL too in test_dashboard.py)."""
    return f"sqlite:///{tmp_path / 'control-plane.db'}"


SCRIPT = "<script>alert(1)</script>"
ATTRIBUTE = '"><img src=x onerror=alert(2)>'


def test_session_and_login_cookies_carry_every_flag(
    control_plane: ControlPlane, dashboard_users: list[str]
) -> None:
    login_cookie = web_client(control_plane).get("/ui/login").headers["set-cookie"]
    assert login_cookie.startswith(f"{LOGIN_COOKIE}=")
    response = post_login(web_client(control_plane), "auditor")
    assert response.status_code == 303
    session = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE)
    )
    for cookie in (login_cookie, session):
        flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        assert {"secure", "httponly", "samesite", "path"} <= flags and "domain" not in flags
        assert "samesite=strict" in cookie.lower() and "path=/" in cookie.lower()
    assert "max-age=43200" in session.lower()  # the session token's 12 hours


def test_pages_carry_a_csp_without_inline_script(
    control_plane: ControlPlane, dashboard_users: list[str]
) -> None:
    browser = dashboard_login(control_plane, "admin")
    for path in ("/ui/login", "/ui/", "/ui/p/p1", "/ui/audit", "/ui/p/p1/nothing"):
        csp = browser.get(path).headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp and "form-action 'self'" in csp


def _pending(cp: ControlPlane) -> list[str]:
    with cp.database.read() as session:
        return list(session.scalars(select(Approval.status)))


def test_forms_without_the_sessions_csrf_token_change_nothing(
    control_plane: ControlPlane, dashboard_users: list[str]
) -> None:
    cp = control_plane
    make_version(cp, evidence=EVIDENCE)
    cp.client.put(
        "/api/v1/projects/p1/policies/production",
        json={"document": POLICY},
        headers=cp.as_(cp.admin_token),
    )
    engineer = dashboard_login(cp, "engineer")
    other = dashboard_login(cp, "engineer")  # a second session of the same user
    others_token = form_value(other.get("/ui/p/p1/models/m/1").text, "csrf")
    promote = "/ui/p/p1/models/m/1/promote"
    for data in (
        {"to": "production"},
        {"to": "production", "csrf": "0" * 64},
        {"to": "production", "csrf": others_token},
    ):
        refused = engineer.post(promote, data=data)
        assert refused.status_code == 403 and "CSRF token" in refused.text
    own = form_value(engineer.get("/ui/p/p1/models/m/1").text, "csrf")
    cross_site = engineer.post(
        promote, data={"to": "production", "csrf": own}, headers={"Origin": "https://evil.test"}
    )
    assert cross_site.status_code == 403 and "another site" in cross_site.text
    assert _pending(cp) == []
    # Logging out is a form too.
    assert engineer.post("/ui/logout").status_code == 403
    assert engineer.post(promote, data={"to": "production", "csrf": own}).status_code == 303
    assert _pending(cp) == ["pending"]


def test_login_needs_its_form_nonce_and_refuses_bad_passwords_alike(
    control_plane: ControlPlane, dashboard_users: list[str]
) -> None:
    client = web_client(control_plane)
    good = {"username": "auditor", "password": PASSWORD}
    forged = client.post("/ui/login", data={**good, "nonce": "forged"})
    assert forged.status_code == 403 and "expired" in forged.text
    nonce = form_value(forged.text, "nonce")  # every form shown carries a new nonce
    wrong_ones = (
        {"username": "auditor", "password": "nope"},
        {"username": "ghost", "password": "x"},
    )
    for wrong in wrong_ones:
        response = client.post("/ui/login", data={**wrong, "nonce": nonce})
        assert response.status_code == 401 and "wrong username or password" in response.text
        assert SESSION_COOKIE not in client.cookies
        nonce = form_value(response.text, "nonce")
    # A next page outside the dashboard is never followed (no open redirect).
    nonce = form_value(client.get("/ui/login").text, "nonce")
    done = client.post("/ui/login", data={**good, "nonce": nonce, "after": "//evil.test/x"})
    assert done.status_code == 303 and done.headers["location"] == "/ui/"


def test_login_never_adopts_a_presented_session_and_logout_ends_it(
    control_plane: ControlPlane, dashboard_users: list[str]
) -> None:
    cp = control_plane
    first = dashboard_login(cp, "reviewer")
    planted = first.cookies[SESSION_COOKIE]
    # The browser arrives at login already holding a session (planted or left over).
    client = web_client(cp)
    client.cookies.set(SESSION_COOKIE, planted, domain="testserver.local")
    assert post_login(client, "reviewer").status_code == 303
    fresh = client.cookies[SESSION_COOKIE]
    assert fresh != planted
    assert first.get("/ui/p/p1").status_code == 303  # the presented session was ended
    page = client.get("/ui/p/p1")
    assert page.status_code == 200 and "reviewer" in page.text
    out = client.post("/ui/logout", data={"csrf": form_value(page.text, "csrf")})
    assert out.status_code == 303 and out.headers["location"] == "/ui/login"
    assert SESSION_COOKIE not in client.cookies
    replay = web_client(cp)
    replay.cookies.set(SESSION_COOKIE, fresh, domain="testserver.local")
    assert replay.get("/ui/p/p1").status_code == 303  # the token is revoked, not just forgotten
    events = cp.client.get("/api/v1/audit/events?limit=100", headers=cp.as_(cp.admin_token))
    logouts = [
        e
        for e in events.json()
        if e["action"] == "token.revoke" and e["details"].get("by") == "logout"
    ]
    assert len(logouts) == 2


def test_stored_payloads_are_escaped_on_every_page(
    control_plane: ControlPlane, dashboard_users: list[str]
) -> None:
    cp = control_plane
    admin = cp.as_(cp.admin_token)
    assert (
        cp.client.post(
            "/api/v1/projects",
            json={"name": "p2", "description": SCRIPT + ATTRIBUTE},
            headers=admin,
        ).status_code
        == 201
    )
    make_version(cp, evidence={**EVIDENCE, "features": ["age", SCRIPT, ATTRIBUTE]})
    run_id = seed_run(cp, log=SCRIPT + ATTRIBUTE)
    with cp.database.write(actor="agent:test") as unit:
        unit.session.add(RunLog(run_id=run_id, attempt=1, line=ATTRIBUTE))
        unit.record("run.report", f"run:{run_id}", {"note": SCRIPT})
    cp.client.put(
        "/api/v1/projects/p1/policies/production", json={"document": POLICY}, headers=admin
    )
    engineer = dashboard_login(cp, "engineer")
    csrf = form_value(engineer.get("/ui/p/p1/models/m/1").text, "csrf")
    engineer.post("/ui/p/p1/models/m/1/promote", data={"to": "production", "csrf": csrf})
    reviewer = dashboard_login(cp, "reviewer")
    csrf = form_value(reviewer.get("/ui/p/p1/models/m/1").text, "csrf")
    reviewer.post("/ui/p/p1/models/m/1/reject", data={"comment": SCRIPT + ATTRIBUTE, "csrf": csrf})
    browser = dashboard_login(cp, "admin")
    pages = [
        "/ui/",
        "/ui/p/p1",
        "/ui/p/p1/runs",
        f"/ui/p/p1/runs/{run_id}",
        f"/ui/p/p1/runs/{run_id}?part=live",
        "/ui/p/p1/models",
        "/ui/p/p1/models/m/1",
        "/ui/audit",
        f"/ui/audit?q={SCRIPT}",
        "/ui/compliance",
        f"/ui/p/p1/datasets/{SCRIPT}",
    ]
    shown = 0
    for path in pages:
        response = browser.get(path)
        assert response.status_code in (200, 404, 422), path
        assert SCRIPT not in response.text and ATTRIBUTE not in response.text, path
        shown += "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text
    assert shown >= 5  # the payloads were there, escaped
