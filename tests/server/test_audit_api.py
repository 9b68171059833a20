"""The control plane's audit log over the wire: signed exports, and an unsigned tail kept short."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bastion.config import Settings
from bastion.errors import AuditChainError
from bastion.security.audit_chain import CHECKPOINT_ACTION
from bastion.security.audit_export import verify_export
from bastion.security.keys import load_keyring
from bastion.server.app import build_database, create_app
from bastion.server.services.bootstrap import initialise
from tests.server.conftest import PASSWORD, ControlPlane, dashboard_login


def _public_key(cp: ControlPlane) -> bytes:
    return load_keyring(cp.settings).primary_signing_key().public_pem


def _new_project(cp: ControlPlane, name: str) -> None:
    created = cp.client.post(
        "/api/v1/projects", json={"name": name}, headers=cp.as_(cp.admin_token)
    )
    assert created.status_code == 201, created.text


def test_the_api_export_starts_with_a_signed_head_and_verifies_offline(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    cp = control_plane
    _new_project(cp, "cardio")  # after the start-up checkpoint: an unsigned event
    response = cp.client.get("/api/v1/audit/export", headers=cp.as_(cp.admin_token))
    assert response.status_code == 200
    lines = response.content.splitlines()
    header, last = json.loads(lines[0]), json.loads(lines[-1])
    assert header["export"] == "bastion-audit-export/v1"
    assert (header["head"]["seq"], header["head"]["hash"]) == (last["seq"], last["hash"])
    # The export is audited, and the head it signed is in the stored chain too.
    assert [json.loads(line)["action"] for line in lines[-2:]] == [
        "audit.export",
        CHECKPOINT_ACTION,
    ]
    exported = tmp_path / "export.jsonl"
    exported.write_bytes(response.content)
    report = verify_export(exported, public_keys=[_public_key(cp)])
    assert report.unsigned_tail == 0 and report.head_seq == last["seq"]
    # Cutting the last event off the download is refused, naming where it was cut.
    exported.write_bytes(b"\n".join(lines[:-1]) + b"\n")
    with pytest.raises(AuditChainError) as info:
        verify_export(exported, public_keys=[_public_key(cp)])
    assert (info.value.kind, info.value.seq) == ("truncated", last["seq"])


def test_the_dashboard_export_is_signed_too(
    control_plane: ControlPlane, dashboard_users: list[str], tmp_path: Path
) -> None:
    cp = control_plane
    exported = dashboard_login(cp, "auditor").get("/ui/audit/export")
    assert exported.status_code == 200
    path = tmp_path / "dashboard.jsonl"
    path.write_bytes(exported.content)
    assert verify_export(path, public_keys=[_public_key(cp)]).unsigned_tail == 0


def test_verify_reports_the_unsigned_tail_and_the_dashboard_is_not_green(
    control_plane: ControlPlane, dashboard_users: list[str]
) -> None:
    cp = control_plane
    admin = cp.as_(cp.admin_token)
    auditor = dashboard_login(cp, "auditor")
    cp.database.audit.checkpoint_if_new()
    signed = cp.client.get("/api/v1/audit/verify", headers=admin).json()
    assert (signed["unsigned_events"], signed["unsigned_since"], signed["unsigned"]) == (
        0,
        None,
        None,
    )
    assert signed["signed_through_seq"] == signed["head_seq"]
    page = auditor.get("/ui/audit").text
    assert 'class="ok" id="chain-status"' in page and "every event covered" in page
    _new_project(cp, "cardio")
    _new_project(cp, "oncology")
    report = cp.client.get("/api/v1/audit/verify", headers=admin).json()
    assert report["unsigned_events"] == 2 and report["unsigned_since"].endswith("Z")
    assert report["signed_through_seq"] == report["head_seq"] - 2
    assert "2 event(s) not yet covered" in report["unsigned"]
    page = auditor.get("/ui/audit").text
    assert 'class="ok" id="chain-status"' not in page
    assert 'class="warn" id="chain-status"' in page and "2 event(s) not yet covered" in page


def test_a_control_plane_before_its_first_checkpoint_shows_no_green(home: Path) -> None:
    # An app whose lifespan has not run (no start-up checkpoint): the bootstrap events only.
    settings = Settings(home=home)
    database = build_database(settings)
    token = initialise(database, username="admin", password=PASSWORD).token
    app = create_app(settings, database=database)
    cp = ControlPlane(app, TestClient(app), database, token, settings)
    page = dashboard_login(cp, "admin").get("/ui/audit").text
    assert 'class="ok" id="chain-status"' not in page
    assert 'class="warn" id="chain-status"' in page and "no signed checkpoint yet" in page


def _control_plane(settings: Settings) -> tuple[TestClient, str]:
    database = build_database(settings)
    token = initialise(database, username="admin", password=PASSWORD).token
    return TestClient(create_app(settings, database=database)), token


def _actions(settings: Settings) -> list[str]:
    return [row.action for row in build_database(settings).audit.rows()]


def test_the_control_plane_signs_at_start_on_a_timer_and_at_shutdown(home: Path) -> None:
    settings = Settings(home=home, audit_checkpoint_seconds=0.2)
    client, token = _control_plane(settings)
    assert _actions(settings)[-1] != CHECKPOINT_ACTION  # the bootstrap events, unsigned
    with client:
        # (1) Start-up signs what was there before.
        assert _actions(settings)[-1] == CHECKPOINT_ACTION
        created = client.post(
            "/api/v1/projects",
            json={"name": "cardio"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert created.status_code == 201
        # (2) The timer signs the new event within a few ticks...
        deadline = time.monotonic() + 20
        while _actions(settings)[-1] != CHECKPOINT_ACTION and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _actions(settings)[-2:] == ["project.create", CHECKPOINT_ACTION]
        # ...and a quiet log gains no checkpoint events.
        count = len(_actions(settings))
        time.sleep(1.0)
        assert len(_actions(settings)) == count
    # (3) Shutdown signs what came after the last tick.
    slower = Settings(home=home, audit_checkpoint_seconds=3600)
    with TestClient(create_app(slower, database=build_database(slower))) as client:
        login = client.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
        assert login.status_code == 201
        assert _actions(settings)[-1] == "token.create"
    assert _actions(settings)[-2:] == ["token.create", CHECKPOINT_ACTION]


def _joined_agent(cp: ControlPlane) -> dict[str, str]:
    admin = cp.as_(cp.admin_token)
    created = cp.client.post("/api/v1/clusters", json={"name": "site-a"}, headers=admin)
    assert created.status_code == 201, created.text
    joined = cp.client.post(
        "/api/v1/agents/join",
        json={
            "cluster": "site-a",
            "join_token": created.json()["join_token"],
            "signing_public_key": "k",
            "hybrid_public_keyset": "h",
        },
    )
    assert joined.status_code == 201, joined.text
    return cp.as_(joined.json()["token"])


def test_heartbeats_keep_liveness_in_the_clusters_table_and_audit_only_changes(
    control_plane: ControlPlane,
) -> None:
    cp = control_plane
    agent = _joined_agent(cp)
    beat = "/api/v1/clusters/site-a/heartbeat"
    before = cp.database.audit.count()
    for _ in range(5):
        assert cp.client.post(beat, json={"runs": {}}, headers=agent).status_code == 200
    assert cp.database.audit.count() == before  # five beats, no event
    seen = cp.client.get("/api/v1/clusters/site-a", headers=cp.as_(cp.admin_token)).json()
    assert seen["last_heartbeat"] is not None  # ...and the liveness is kept all the same
    # A run the control plane does not know is to be stopped: a state change, audited.
    unknown = "0" * 32
    reply = cp.client.post(beat, json={"runs": {unknown: 1}}, headers=agent).json()
    assert reply["stop"] == [unknown]
    # Leaving, then coming back after a silence, are events.
    assert cp.client.post(beat, json={"stopping": True}, headers=agent).status_code == 200
    assert cp.client.post(beat, json={"runs": {}}, headers=agent).status_code == 200
    events = list(cp.database.audit.rows())[before:]
    assert [(e.action, e.target) for e in events] == [
        ("cluster.stop_runs", "cluster:site-a"),
        ("cluster.disconnected", "cluster:site-a"),
        ("cluster.connected", "cluster:site-a"),
    ]
    assert json.loads(events[0].details) == {"runs": [unknown]}
