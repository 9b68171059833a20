"""The dashboard in a real browser (headless Chromium driven by Playwright) against `bastion up`.

Screenshots of the main pages are written to ``build/dashboard-screenshots`` (ignored by git;
``BASTION_SCREENSHOTS`` moves it) for a person to look at.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import sync_playwright

from bastion.config import Settings
from bastion.server.app import build_database
from tests.server.conftest import PASSWORD
from tests.server.test_dashboard import POLICY
from tests.server.test_evaluations import EVIDENCE, make_version
from tests.server.test_live import BASTION, _env, _free_port, _wait_healthy

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(
    os.environ.get(
        "BASTION_SCREENSHOTS",
        Path(__file__).resolve().parents[2] / "build" / "dashboard-screenshots",
    )
)
#: How long a page may take to show what is awaited: a bound, not a pause (each wait ends as
#: soon as the element is there). 30 s failed once on a two-core host with the whole suite on it.
WAIT_MS = 120_000


@pytest.fixture
def bastion_up(tmp_path: Path) -> Iterator[tuple[str, Path, dict[str, str]]]:
    """`bastion up` on a free loopback port: (URL, home, admin headers)."""
    home = tmp_path / "home"
    port = _free_port()
    up = subprocess.Popen(
        [BASTION, "up", "--port", str(port)],
        env=_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url)
        token = json.loads(Settings(home=home).credentials_file.read_text())["token"]
        yield url, home, {"Authorization": f"Bearer {token}"}
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)


def _people(url: str, admin: dict[str, str]) -> None:
    """An engineer, a reviewer and an auditor of project demo, with passwords; a policy."""
    with httpx.Client(base_url=f"{url}/api/v1", headers=admin, timeout=30) as api:
        for username, role in (
            ("engineer", "ml-engineer"),
            ("reviewer", "reviewer"),
            ("auditor", "auditor"),
        ):
            made = api.post("/users", json={"username": username, "password": PASSWORD})
            assert made.status_code == 201, made.text
            member = api.put(f"/projects/demo/members/{username}", json={"role": role})
            assert member.status_code == 200, member.text
        policy = api.put("/projects/demo/policies/production", json={"document": POLICY})
        assert policy.status_code == 200, policy.text


def _log_in(page: Any, url: str, username: str) -> None:
    page.goto(f"{url}/ui/")
    assert page.url.startswith(f"{url}/ui/login")  # no session: sent to log in
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    if page.locator("#whoami").count() == 0:
        raise AssertionError(f"{username} could not log in: {page.content()[-1500:]}")
    assert username in page.inner_text("#whoami")


def _log_out(page: Any, url: str) -> None:
    page.click("#logout")
    page.wait_for_url(f"{url}/ui/login")


def _shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_review_and_audit_a_model_in_a_real_browser(
    bastion_up: tuple[str, Path, dict[str, str]],
) -> None:
    assert Path(CHROMIUM).exists(), (
        "the dashboard tests need Debian's Chromium: apt-get install chromium"
    )
    url, home, admin = bastion_up
    _people(url, admin)
    database = build_database(Settings(home=home))
    make_version(
        database, evidence=EVIDENCE, project_name="demo", cluster_name="local"
    )  # registered by the engineer's training run
    database.engine.dispose()
    SHOTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.set_default_timeout(WAIT_MS)

        # The engineer logs in and follows a run to completion on its live page.
        _log_in(page, url, "engineer")
        _shot(page, "01-projects")
        spec = {
            "name": "smoke",
            "project": "demo",
            "cluster": "local",
            "job": {"type": "smoke", "steps": 8, "sleep_seconds": 0.5},
        }
        run = httpx.post(f"{url}/api/v1/projects/demo/runs", json=spec, headers=admin, timeout=30)
        assert run.status_code == 201, run.text
        run_id = run.json()["id"]
        page.click("ul.cards a")
        page.wait_for_selector("text=Recent runs")
        _shot(page, "02-overview")
        page.click(f"a[href='/ui/p/demo/runs/{run_id}']")
        assert page.get_attribute("#live", "data-final") == "false"
        page.wait_for_selector("#live[data-final=true]")  # refreshed in place by the page script
        assert "succeeded" in page.inner_text("#live")
        assert "step 8/8" in page.inner_text("#log")
        _shot(page, "03-run")

        # The model card, then a promotion request through the policy gates.
        page.click("nav >> text=Models")
        page.click("text=m@1")
        page.wait_for_selector("text=Security scorecard")
        assert page.locator("img.plot").count() == 2  # robustness curve, ROC curve
        assert page.locator("#approve").count() == 0
        _shot(page, "04-model-card")
        page.click("#promote")
        page.wait_for_selector("text=min_accuracy")
        assert "pending" in page.inner_text("section.actions")
        _log_out(page, url)

        # The reviewer approves.
        _log_in(page, url, "reviewer")
        page.goto(f"{url}/ui/p/demo/models/m/1")
        page.fill("input[name=comment]", "gates pass; approved")
        page.click("#approve")
        page.wait_for_selector("h1 >> text=production")
        _shot(page, "05-approved")
        _log_out(page, url)

        # The auditor sees it all read-only and finds the approval in the verified log.
        _log_in(page, url, "auditor")
        page.goto(f"{url}/ui/p/demo/models/m/1")
        assert page.locator("#approve").count() == 0 and page.locator("#promote").count() == 0
        page.click("nav >> text=Audit")
        page.wait_for_selector("#chain-status")
        assert "Chain verified" in page.inner_text("#chain-status")
        page.fill("input[name=q]", "approval.approved")
        page.click("button:has-text('Search')")
        page.wait_for_selector("#events >> text=gates pass; approved")
        _shot(page, "06-audit")
        page.click("nav >> text=Compliance")
        page.wait_for_selector("text=164.312(b)")
        _shot(page, "07-compliance")
        page.goto(f"{url}/ui/p/demo/datasets")
        _shot(page, "08-datasets")
        _log_out(page, url)
        assert page.locator("input[name=password]").count() == 1
        browser.close()
    assert errors == []  # no CSP violation or script error in the console
