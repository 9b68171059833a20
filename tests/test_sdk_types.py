"""The SDK is typed: each call returns the API's response model (``bastion.api``), not a dict."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select

import bastion.client
from bastion.client import (
    AuditEventOut,
    AuditVerifyOut,
    Client,
    ClusterOut,
    DatasetOut,
    DatasetVersionOut,
    HeartbeatOut,
    JoinOut,
    LeaseOut,
    MembershipOut,
    NewClusterOut,
    NewTokenOut,
    PolicyOut,
    ProjectOut,
    RunEventOut,
    RunOut,
    TokenOut,
    UserOut,
    WhoAmI,
)
from bastion.server.db.models import Cluster, Dataset, DatasetVersion, Project, User
from bastion.server.db.session import Database
from tests.conftest import other_keyring

#: The public calls that return untyped JSON, and why. Every other call returns a response
#: model, a list of them, text, or nothing.
UNTYPED: dict[str, str] = {
    "request": "the way in to any route: whatever JSON it answers",
    "model_card": "the card route declares no response model (its sections follow the evidence)",
    "lineage": "the lineage route declares no response model (a graph: nodes and edges)",
    "serving_keys": "the serve job's key records route declares no response model",
}


def _public_methods() -> dict[str, Callable[..., Any]]:
    return {
        name: member
        for name, member in inspect.getmembers(Client, inspect.isfunction)
        if not name.startswith("_")
    } | {"from_settings": Client.from_settings}


def _loose(hint: object) -> bool:
    """Whether a return type lets JSON through untyped (``Any`` anywhere in it)."""
    if hint is Any:
        return True
    if hint in (dict, list):  # a bare container: its items are unknown
        return True
    return any(_loose(arg) for arg in typing.get_args(hint))


def _models(hint: object) -> set[type[BaseModel]]:
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        return {hint}
    return {model for arg in typing.get_args(hint) for model in _models(arg)}


def test_every_call_returns_a_model_unless_it_is_listed_as_untyped() -> None:
    methods = _public_methods()
    assert set(UNTYPED) <= set(methods), set(UNTYPED) - set(methods)
    loose: set[str] = set()
    for name, method in methods.items():
        hints = typing.get_type_hints(method)
        assert "return" in hints, f"Client.{name} has no return annotation"
        if _loose(hints["return"]):
            loose.add(name)
    assert loose == set(UNTYPED), {
        "untyped but not listed": sorted(loose - set(UNTYPED)),
        "listed but typed now (drop them from UNTYPED)": sorted(set(UNTYPED) - loose),
    }


def test_every_model_a_call_returns_is_exported_with_the_client() -> None:
    returned = {
        model
        for method in _public_methods().values()
        for model in _models(typing.get_type_hints(method)["return"])
    }
    assert returned, "no call returns a model"
    exported = {getattr(bastion.client, name) for name in bastion.client.__all__}
    assert returned <= exported, sorted(m.__name__ for m in returned - exported)


# -- one round trip through the real app ----------------------------------------------------


def _same_json(model: BaseModel | list[Any], wire: object) -> None:
    """The model dumps to exactly the JSON the server sent (what the CLI prints)."""
    items = model if isinstance(model, list) else [model]
    dumped = [item.model_dump(mode="json", by_alias=True) for item in items]
    assert dumped == (wire if isinstance(model, list) else [wire])


def test_calls_return_models_from_the_real_app(
    sdk_plane: tuple[Client, Database], tmp_path: Path
) -> None:
    admin, database = sdk_plane
    who = admin.whoami()
    assert isinstance(who, WhoAmI) and who.username == "admin" and who.is_admin
    project = admin.create_project("cardiology", description="heart")
    assert isinstance(project, ProjectOut) and project.name == "cardiology"
    projects = admin.list_projects()
    assert [type(p) for p in projects] == [ProjectOut] and projects[0].id == project.id
    _same_json(projects, admin.request("GET", "/api/v1/projects"))
    cluster = admin.create_cluster("c1")
    assert isinstance(cluster, NewClusterOut) and cluster.join_token
    clusters = admin.list_clusters()
    assert [type(c) for c in clusters] == [ClusterOut] and clusters[0].last_heartbeat is None
    user = admin.create_user("alice")
    assert isinstance(user, UserOut) and user.kind == "human" and not user.disabled
    member = admin.set_member("cardiology", "alice", "ml-engineer")
    assert isinstance(member, MembershipOut) and member.role == "ml-engineer"
    assert [m.username for m in admin.list_members("cardiology")] == ["alice"]
    minted = admin.create_token("ci", expires_in_days=1)
    assert isinstance(minted, NewTokenOut) and minted.token and minted.expires_at is not None
    revoked = admin.revoke_token(minted.id)
    assert isinstance(revoked, TokenOut) and revoked.revoked_at is not None
    assert all(isinstance(t, TokenOut) for t in admin.list_tokens())

    # The agent protocol: join, heartbeat, lease.
    keys = other_keyring(tmp_path / "agent")
    joined = admin.join_cluster(
        "c1",
        join_token=cluster.join_token,
        signing_public_key=keys.primary_signing_key().public_pem.decode(),
        hybrid_public_keyset=keys.hybrid_public_keyset(),
    )
    assert isinstance(joined, JoinOut) and joined.cluster == "c1"
    with Client(admin.url, token=joined.token, transport=admin._http._transport) as agent:
        beat = agent.heartbeat("c1", {})
        assert isinstance(beat, HeartbeatOut) and beat.stop == [] and beat.serve == {}
        assert agent.lease("c1", wait=0) is None
        spec = {"name": "smoke", "project": "cardiology", "cluster": "c1"}
        run = admin.submit_run({**spec, "job": {"type": "smoke"}})
        assert isinstance(run, RunOut) and run.status == "queued"
        lease = agent.lease("c1", wait=0)
        assert isinstance(lease, LeaseOut) and lease.run_id == run.id and lease.attempt == 1
        assert lease.spec["job"]["type"] == "smoke" and lease.job_token
        assert agent.heartbeat("c1", {run.id: lease.attempt}).stop == []
    shown = admin.get_run("cardiology", run.id)
    assert isinstance(shown, RunOut) and shown.status == "leased"
    _same_json(shown, admin.request("GET", f"/api/v1/projects/cardiology/runs/{run.id}"))
    assert [r.id for r in admin.list_runs("cardiology")] == [run.id]
    assert all(isinstance(e, RunEventOut) for e in admin.run_events("cardiology", run.id))
    assert admin.run_logs("cardiology", run.id) == []
    assert admin.cancel_run("cardiology", run.id).status == "cancelled"

    # A dataset version: ``schema`` on the wire, ``schema_`` on the model.
    _add_dataset_version(database)
    datasets = admin.list_datasets("cardiology")
    assert [type(d) for d in datasets] == [DatasetOut] and datasets[0].name == "patients"
    version = admin.dataset_version("cardiology", "patients", 1)
    assert isinstance(version, DatasetVersionOut)
    assert version.schema_ == SCHEMA and version.cluster == "c1" and version.row_count == 10
    _same_json(
        admin.dataset_versions("cardiology", "patients"),
        admin.request("GET", "/api/v1/projects/cardiology/datasets/patients/versions"),
    )
    held = admin.set_hold("cardiology", "patients", 1, "litigation")
    assert isinstance(held, DatasetVersionOut) and held.retention_hold == "litigation"

    # Governance and audit.
    policy = admin.put_policy("cardiology", "production", {"min_accuracy": 0.8})
    assert isinstance(policy, PolicyOut) and policy.document == {"min_accuracy": 0.8}
    assert [p.name for p in admin.list_policies("cardiology")] == ["production"]
    assert admin.list_approvals("cardiology") == []
    assert admin.list_models("cardiology") == [] and admin.list_deployments("cardiology") == []
    assert admin.erasures("cardiology") == []
    events = admin.audit_events(limit=1000)
    assert all(isinstance(e, AuditEventOut) for e in events)
    assert {"project.create", "cluster.join"} <= {e.action for e in events}
    report = admin.verify_audit()
    assert isinstance(report, AuditVerifyOut) and report.events >= len(events)


SCHEMA = {"kind": "table", "columns": [{"name": "y"}, {"name": "x"}]}


def _add_dataset_version(database: Database) -> None:
    """What an agent's registration records, written directly (no agent runs here)."""
    with database.write(actor="agent:test") as unit:
        project = unit.session.scalars(select(Project).where(Project.name == "cardiology")).one()
        cluster = unit.session.scalars(select(Cluster).where(Cluster.name == "c1")).one()
        admin = unit.session.scalars(select(User.id).where(User.username == "admin")).one()
        dataset = Dataset(project_id=project.id, name="patients")
        unit.session.add(dataset)
        unit.session.flush()
        unit.session.add(
            DatasetVersion(
                dataset_id=dataset.id,
                version=1,
                schema_=SCHEMA,
                row_count=10,
                target="y",
                manifest_hash="ab" * 32,
                signature="sig",
                summaries={},
                purpose="diagnosis support",
                created_by=admin,
                cluster_id=cluster.id,
            )
        )
        unit.record("dataset.version.create", "dataset:cardiology/patients@1")
