"""What the agent protocol records: fencing of superseded attempts, and job isolation.

The job never holds its token (the agent's relay does), but a relay of a dead agent's
attempt, or anything that saw the token, must not report on a run a newer attempt owns.
An agent says how it runs jobs (bubblewrap or none); a run that ran unsandboxed says so,
and so do the cluster list and the compliance reports. An agent is leased only a run its
host can hold (the GPUs it advertises, and has free).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from bastion.client import Client
from bastion.errors import Conflict
from bastion.server.db.models import Run
from bastion.server.db.session import Database
from tests.conftest import other_keyring


def _join(admin: Client, tmp_path: Path) -> str:
    admin.create_project("p")
    cluster = admin.create_cluster("c1")
    keys = other_keyring(tmp_path / "agent")
    joined = admin.join_cluster(
        "c1",
        join_token=cluster.join_token,
        signing_public_key=keys.primary_signing_key().public_pem.decode(),
        hybrid_public_keyset=keys.hybrid_public_keyset(),
    )
    return joined.token


def test_a_superseded_attempts_token_is_refused(
    sdk_plane: tuple[Client, Database], tmp_path: Path
) -> None:
    admin, database = sdk_plane
    agent_token = _join(admin, tmp_path)
    transport = admin._http._transport
    with Client(admin.url, token=agent_token, transport=transport) as agent:
        run = admin.submit_run(
            {
                "name": "r",
                "project": "p",
                "cluster": "c1",
                "max_retries": 1,
                "job": {"type": "smoke"},
            }
        )
        first = agent.lease("c1", wait=0)
        assert first is not None and first.attempt == 1
        with Client(admin.url, token=first.job_token, transport=transport) as job:
            job.report_logs("p", run.id, ["attempt 1 reports"])
            # The agent dies: its lease runs out, and the run is leased again.
            with database.write(actor="test") as unit:
                held = unit.session.get(Run, run.id)
                assert held is not None
                held.lease_expires_at = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
                unit.record("test.expire", f"run:{run.id}", {})
            second = agent.lease("c1", wait=0)
            assert second is not None and second.attempt == 2
            with pytest.raises(Conflict, match="superseded by attempt 2"):
                job.report_logs("p", run.id, ["attempt 1, after the fence"])
        with Client(admin.url, token=second.job_token, transport=transport) as job:
            job.report_logs("p", run.id, ["attempt 2 reports"])
    lines = [line.line for line in admin.run_logs("p", run.id)]
    assert lines == ["attempt 1 reports", "attempt 2 reports"]


def _controls(admin: Client, framework: str) -> dict[str, dict[str, object]]:
    report = json.loads(admin.compliance_report(framework))
    return {control["id"]: control for control in report["controls"]}


def test_a_run_an_unsandboxed_agent_ran_is_marked_and_fails_compliance(
    sdk_plane: tuple[Client, Database], tmp_path: Path
) -> None:
    admin, _ = sdk_plane
    agent_token = _join(admin, tmp_path)
    spec = {"project": "p", "cluster": "c1", "job": {"type": "smoke"}}
    with Client(admin.url, token=agent_token, transport=admin._http._transport) as agent:
        sandboxed = admin.submit_run({**spec, "name": "in-the-sandbox"})
        assert agent.lease("c1", wait=0, isolation="bubblewrap") is not None
        assert admin.get_run("p", sandboxed.id).isolation == "bubblewrap"
        assert admin.list_clusters()[0].isolation == "bubblewrap"
        assert _controls(admin, "hipaa")["164.312(a)(1)"]["status"] == "pass"
        assert _controls(admin, "gdpr")["Art. 32"]["status"] in ("pass", "fail")
        # The operator restarts the agent with --no-sandbox.
        agent.heartbeat("c1", {}, isolation="none")
        assert admin.list_clusters()[0].isolation == "none"
        unsandboxed = admin.submit_run({**spec, "name": "unsandboxed"})
        assert agent.lease("c1", wait=0, isolation="none") is not None
    assert admin.get_run("p", unsandboxed.id).isolation == "none"
    assert admin.get_run("p", sandboxed.id).isolation == "bubblewrap"
    hipaa = _controls(admin, "hipaa")["164.312(a)(1)"]
    assert hipaa["status"] == "fail"
    assert "UNSANDBOXED: c1" in " ".join(map(str, hipaa["evidence"]))  # type: ignore[call-overload]
    assert "--no-sandbox" in str(hipaa["fix"])
    assert _controls(admin, "gdpr")["Art. 32"]["status"] == "fail"
    changes = [e for e in admin.audit_events(limit=100) if e.action == "cluster.isolation"]
    assert [(e.details["before"], e.details["after"]) for e in changes] == [
        (None, "bubblewrap"),
        ("bubblewrap", "none"),
    ]


def test_a_run_stays_marked_once_any_attempt_ran_unsandboxed(
    sdk_plane: tuple[Client, Database], tmp_path: Path
) -> None:
    admin, database = sdk_plane
    agent_token = _join(admin, tmp_path)
    run = admin.submit_run(
        {"name": "r", "project": "p", "cluster": "c1", "max_retries": 1, "job": {"type": "smoke"}}
    )
    with Client(admin.url, token=agent_token, transport=admin._http._transport) as agent:
        assert agent.lease("c1", wait=0, isolation="none") is not None
        with database.write(actor="test") as unit:
            held = unit.session.get(Run, run.id)
            assert held is not None
            held.lease_expires_at = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
            unit.record("test.expire", f"run:{run.id}", {})
        again = agent.lease("c1", wait=0, isolation="bubblewrap")
        assert again is not None and again.attempt == 2
    assert admin.get_run("p", run.id).isolation == "none"


def test_an_agent_is_leased_only_a_run_its_host_can_hold(
    sdk_plane: tuple[Client, Database], tmp_path: Path
) -> None:
    from bastion.client import Capacity, GpuInfo

    admin, _ = sdk_plane
    agent_token = _join(admin, tmp_path)
    gpu_host = Capacity(cpus=16, memory_mb=131072, gpus=[GpuInfo(index=0, name="NVIDIA H200")])
    spec = {"project": "p", "cluster": "c1", "job": {"type": "smoke"}}
    with Client(admin.url, token=agent_token, transport=admin._http._transport) as agent:
        agent.heartbeat("c1", {}, capacity=gpu_host)
        on_gpu = admin.submit_run({**spec, "name": "on-gpu", "resources": {"gpus": 1}})
        on_cpu = admin.submit_run({**spec, "name": "on-cpu"})
        # The agent restarts with its GPU hidden (--gpus 0): the older GPU run waits, and
        # the CPU run behind it is not held up.
        agent.heartbeat("c1", {}, capacity=Capacity(cpus=16, memory_mb=131072))
        first = agent.lease("c1", wait=0)
        assert first is not None and first.run_id == on_cpu.id
        assert agent.lease("c1", wait=0) is None
        assert admin.get_run("p", on_gpu.id).status == "queued"
        # The GPU is back, but busy with another job: still not leased.
        agent.heartbeat("c1", {}, capacity=gpu_host)
        assert agent.lease("c1", wait=0, free_gpus=0) is None
        second = agent.lease("c1", wait=0, free_gpus=1)
        assert second is not None and second.run_id == on_gpu.id
        assert second.spec["resources"]["gpus"] == 1
