"""The dashboard's audit page: heartbeats hidden unless asked for, filters by action, actor and
time, bounded pages, long details folded and wrapped, and refusals for bad filters."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from fastapi.testclient import TestClient

from bastion.security.audit_log import AuditEvent, AuditQuery
from tests.server.conftest import ControlPlane, dashboard_login

LONG = {"comment": "word " * 100, "path": "/" + "x" * 500}


def _seed(cp: ControlPlane) -> None:
    cp.database.audit.append_many(
        [
            AuditEvent("agent:agent-c1", "cluster.connected", "cluster:c1", {"active": 0}),
            AuditEvent("agent:agent-c1", "cluster.heartbeat", "cluster:c1", {"active": 1}),
            AuditEvent("agent:agent-c1", "cluster.disconnected", "cluster:c1", {"active": 0}),
            AuditEvent("agent:agent-c1", "cluster.stop_runs", "cluster:c1", {"runs": ["r1"]}),
            AuditEvent("user:engineer", "run.create", "run:r1", {"name": "smoke"}),
            AuditEvent("user:engineer", "run.cancel", "run:r1", {}),
            AuditEvent("user:reviewer", "runs.exported", "run:r1", {}),
            AuditEvent("user:<b>mallory</b>", "model.evaluation", "model:<i>m</i>", LONG),
        ]
    )


def _actions(page: str) -> list[str]:
    body = page.split('id="events"', 1)[1]
    return re.findall(
        r"<tr><td>\d+</td><td class=\"ts\">[^<]*</td><td>[^<]*</td><td>([^<]*)</td>", body
    )


@pytest.fixture
def auditor(control_plane: ControlPlane, dashboard_users: list[str]) -> TestClient:
    _seed(control_plane)
    return dashboard_login(control_plane, "auditor")


def test_heartbeat_events_are_hidden_unless_asked_for(auditor: TestClient) -> None:
    shown = _actions(auditor.get("/ui/audit").text)
    assert "run.create" in shown and "cluster.stop_runs" in shown  # a decision, not liveness
    assert not {"cluster.connected", "cluster.heartbeat", "cluster.disconnected"} & set(shown)
    everything = _actions(auditor.get("/ui/audit", params={"heartbeats": "on"}).text)
    assert {"cluster.connected", "cluster.heartbeat", "cluster.disconnected"} <= set(everything)
    asked = _actions(auditor.get("/ui/audit", params={"action": "cluster.heartbeat"}).text)
    assert asked == ["cluster.heartbeat"]  # an action filter names what it wants


def test_filters_by_action_family_actor_and_time(
    auditor: TestClient, control_plane: ControlPlane
) -> None:
    family = _actions(auditor.get("/ui/audit", params={"action": "run"}).text)
    assert sorted(family) == ["run.cancel", "run.create"]  # not runs.exported
    mine = auditor.get("/ui/audit", params={"actor": "user:engineer", "q": "smoke"}).text
    assert _actions(mine) == ["run.create"]
    assert _actions(auditor.get("/ui/audit", params={"actor": "user:engine"}).text) == []
    created = control_plane.database.audit.search(AuditQuery(action="run.create"), limit=1)
    stamp = created[0].ts  # 2026-12-02T10:30:15.123456Z
    day = dt.date.fromisoformat(stamp[:10])
    for since, until, found in [
        (stamp[:10], stamp[:10], True),  # a "to" day covers all of that day
        (stamp[:16], stamp[:16], True),  # ... a minute all of that minute
        (stamp[:19], "", True),
        ("", str(day - dt.timedelta(days=1)), False),
        (str(day + dt.timedelta(days=1)), "", False),
        ("", "9999-12-31", True),
    ]:
        page = auditor.get("/ui/audit", params={"from": since, "to": until})
        assert page.status_code == 200, page.text
        assert ("run.create" in _actions(page.text)) is found, (since, until)


BAD_FILTERS = [
    {"from": "yesterday"},
    {"to": "2026-13-45"},
    {"from": "2026-02-30T10:00"},
    {"from": "2026-01-01T10:00+02:00"},
    {"action": "<script>"},
    {"action": "a" * 101},
    {"actor": "user:\x01"},
    {"actor": "u" * 256},
    {"q": "q" * 201},
    {"limit": "0"},
    {"limit": "1001"},
    {"before": "0"},
    {"before": "abc"},
    {"heartbeats": "maybe"},
]


def test_a_bad_filter_is_a_422_page_never_a_500(auditor: TestClient) -> None:
    for params in BAD_FILTERS:
        page = auditor.get("/ui/audit", params=params)
        assert page.status_code == 422, (params, page.text)
        assert page.headers["content-type"].startswith("text/html") and "Invalid input" in page.text
        assert "<script>" not in page.text.split("</head>", 1)[1]


def test_pages_are_bounded_and_go_back_in_time(auditor: TestClient) -> None:
    first = auditor.get("/ui/audit", params={"limit": "3", "heartbeats": "on"}).text
    seqs = [int(s) for s in re.findall(r"<tr><td>(\d+)</td>", first.split('id="events"', 1)[1])]
    assert len(seqs) == 3 and seqs == sorted(seqs, reverse=True)
    older = re.search(r'href="(/ui/audit\?[^"]+)" id="older"', first)
    assert older is not None and "heartbeats=on" in older.group(1) and "limit=3" in older.group(1)
    second = auditor.get(older.group(1).replace("&amp;", "&")).text
    next_seqs = [
        int(s) for s in re.findall(r"<tr><td>(\d+)</td>", second.split('id="events"', 1)[1])
    ]
    assert len(next_seqs) == 3 and max(next_seqs) < min(seqs)
    assert ">Newest</a>" in second


def test_long_details_fold_and_wrap_and_every_value_is_escaped(auditor: TestClient) -> None:
    page = auditor.get("/ui/audit", params={"action": "model"}).text
    row = page.split('id="events"', 1)[1].replace("&#34;", '"')
    assert "<details><summary><code>" in row and "…</code></summary><pre>" in row
    assert '  "comment": "word word' in row  # indented when opened
    assert "&lt;b&gt;mallory&lt;/b&gt;" in row and "<b>" not in row and "<i>" not in row
    short = auditor.get("/ui/audit", params={"action": "run.create"}).text
    assert '<code>{"name":"smoke"}</code>' in short.replace("&#34;", '"')  # shown whole
    css = auditor.get("/ui/static/bastion.css").text
    details_rule = next(line for line in css.splitlines() if line.startswith("td.details code"))
    assert "white-space: pre-wrap" in details_rule and "word-break: break-word" in details_rule
    assert "#events { table-layout: fixed" in css
