"""Placement: what a cluster's agent advertises, and the runs refused because no agent of
the cluster can hold them (one line naming what is missing)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bastion.cli import context as cli_context
from bastion.cli.main import run
from bastion.client import Capacity, Client, GpuInfo
from bastion.errors import InvalidSpec
from bastion.server.db.models import Cluster
from bastion.server.db.session import Database
from bastion.server.services.placement import Need, shortfall
from tests.server.conftest import ControlPlane, dashboard_login
from tests.server.test_agent_protocol import _join

H200 = GpuInfo(index=0, name="NVIDIA H200", memory_mb=143771)
GPU_HOST = Capacity(cpus=16, memory_mb=131072, gpus=[H200])
CPU_HOST = Capacity(cpus=2, memory_mb=24000)
#: How the SDK words a refusal it relays.
REFUSED = "control plane refused (422): "


def _spec(name: str, **resources: Any) -> dict[str, Any]:
    return {
        "name": name,
        "project": "p",
        "cluster": "c1",
        "job": {"type": "smoke"},
        "resources": resources,
    }


def _bastion(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert run(list(argv)) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_the_capacity_an_agent_advertises_is_recorded_audited_and_listed(
    sdk_plane: tuple[Client, Database],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    admin, _ = sdk_plane
    token = _join(admin, tmp_path)
    assert admin.list_clusters()[0].capacity is None
    with Client(admin.url, token=token, transport=admin._http._transport) as agent:
        agent.heartbeat("c1", {}, capacity=CPU_HOST)
        agent.heartbeat("c1", {}, capacity=CPU_HOST)  # unchanged: no new audit event
        agent.heartbeat("c1", {}, capacity=GPU_HOST)  # the operator added a GPU
    assert admin.list_clusters()[0].capacity == GPU_HOST
    changes = [e.details for e in admin.audit_events() if e.action == "cluster.capacity"]
    assert [(c["before"], c["after"]) for c in changes] == [
        (None, {"cpus": 2, "memory_mb": 24000, "gpus": []}),
        (
            {"cpus": 2, "memory_mb": 24000, "gpus": []},
            {
                "cpus": 16,
                "memory_mb": 131072,
                "gpus": [{"index": 0, "name": "NVIDIA H200", "memory_mb": 143771}],
            },
        ),
    ]
    monkeypatch.setattr(Client, "from_settings", staticmethod(lambda _settings: admin))
    monkeypatch.setattr(Client, "__exit__", lambda *_: None)  # the test's client stays open
    listed = json.loads(_bastion(capsys, "cluster", "list", "-o", "json"))
    assert listed[0]["capacity"] == {
        "cpus": 16,
        "memory_mb": 131072,
        "gpus": [{"index": 0, "name": "NVIDIA H200", "memory_mb": 143771}],
    }
    # One table row a cluster, however wide the terminal the CLI's console was made for.
    monkeypatch.setattr(cli_context.out, "width", 200)
    table = _bastion(capsys, "cluster", "list")
    assert "128.0 GiB" in table and "1 (NVIDIA H200)" in table


def test_a_run_no_agent_of_its_cluster_can_hold_is_refused_naming_what_is_missing(
    sdk_plane: tuple[Client, Database], tmp_path: Path
) -> None:
    admin, _ = sdk_plane
    token = _join(admin, tmp_path)
    # Before the agent advertised anything: CPU runs are queued, GPU runs refused.
    assert admin.submit_run(_spec("cpu-early")).status == "queued"
    with pytest.raises(InvalidSpec) as refused:
        admin.submit_run(_spec("gpu-early", gpus=1))
    assert str(refused.value) == REFUSED + (
        "cluster c1 has no agent with 1 GPU (its agent has not advertised its capacity yet: "
        "start it on a GPU host first)"
    )
    with Client(admin.url, token=token, transport=admin._http._transport) as agent:
        agent.heartbeat("c1", {}, capacity=CPU_HOST)
    for resources, says in [
        ({"gpus": 1}, "cluster c1 has no agent with 1 GPU (its agents advertise 0)"),
        ({"gpus": 2}, "cluster c1 has no agent with 2 GPUs (its agents advertise 0)"),
        (
            {"memory_mb": 65536},
            "cluster c1 has no agent with 65536 MiB of memory (its agents advertise "
            "24000 MiB); lower resources.memory_mb",
        ),
        ({"cpus_per_worker": 8}, "cluster c1 has no agent with 8 CPUs (its agents advertise 2)"),
    ]:
        with pytest.raises(InvalidSpec) as refused:
            admin.submit_run(_spec("too-big", **resources))
        assert str(refused.value) == REFUSED + says
    assert admin.submit_run(_spec("fits", memory_mb=8192, cpus_per_worker=2)).status == "queued"
    names = {r.name for r in admin.list_runs("p")}
    assert names == {"cpu-early", "fits"}


def test_workers_need_their_cpus_each_on_one_host() -> None:
    capacity = CPU_HOST.model_dump(mode="json")  # 2 CPUs
    assert shortfall(Need(workers=2), capacity, cluster="c1") is None
    assert shortfall(Need(workers=2, cpus=1), capacity, cluster="c1") is None
    assert (
        shortfall(Need(workers=2, cpus=2), capacity, cluster="c1")
        == "cluster c1 has no agent with 4 CPUs (2 workers x 2) (its agents advertise 2)"
    )
    assert (
        shortfall(Need(workers=3, cpus=1), capacity, cluster="c1")
        == "cluster c1 has no agent with 3 CPUs (3 workers x 1) (its agents advertise 2)"
    )


def test_shortfall_counts_free_gpus_only_when_the_agent_says_them() -> None:
    capacity = GPU_HOST.model_dump(mode="json")
    assert shortfall(Need(gpus=1), capacity, cluster="c1") is None
    assert shortfall(Need(gpus=1), capacity, cluster="c1", free_gpus=1) is None
    assert (
        shortfall(Need(gpus=1), capacity, cluster="c1", free_gpus=0)
        == "cluster c1 has 0 of its 1 GPUs free now"
    )
    assert shortfall(Need(gpus=0), None, cluster="c1") is None


def test_the_dashboard_shows_what_each_cluster_advertises(
    control_plane: ControlPlane, dashboard_users: list[str]
) -> None:
    cp = control_plane
    admin = cp.as_(cp.admin_token)
    assert cp.client.post("/api/v1/clusters", json={"name": "gpu-site"}, headers=admin).is_success
    with cp.database.write(actor="test") as unit:
        cluster = unit.session.scalars(select(Cluster).where(Cluster.name == "gpu-site")).one()
        cluster.capacity = GPU_HOST.model_dump(mode="json")
        unit.record("test.capacity", "cluster:gpu-site", {})
    page = dashboard_login(cp, "admin").get("/ui/p/p1").text
    clusters = page.split("<h2>Clusters</h2>", 1)[1].split("</section>", 1)[0]
    assert "<td>16 CPUs, 128.0 GiB, 1 GPU (NVIDIA H200)</td>" in clusters
