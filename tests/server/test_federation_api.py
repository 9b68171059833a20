"""A federated run's meeting point on the control plane: who may post what, and what each
participant sees. Public material only; a job speaks only for its own run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bastion.client import Client
from bastion.errors import Conflict, InvalidInput, InvalidSpec, NotAuthorized, SignatureError
from bastion.federated import endorse
from bastion.federated.tls import link_certificates, site_key
from bastion.security.keys import Keyring
from bastion.server.db.models import Cluster, Dataset, DatasetVersion, Project, Run, User
from bastion.server.db.session import Database
from tests.conftest import other_keyring

SITES = ("c1", "c2")
COLUMNS = [{"name": "x", "type": "float", "nullable": False}, {"name": "y", "type": "integer"}]


def _join(admin: Client, name: str, tmp_path: Path) -> tuple[str, Keyring]:
    cluster = admin.create_cluster(name)
    keys = other_keyring(tmp_path / name)
    joined = admin.join_cluster(
        name,
        join_token=cluster.join_token,
        signing_public_key=keys.primary_signing_key().public_pem.decode(),
        hybrid_public_keyset=keys.hybrid_public_keyset(),
    )
    return joined.token, keys


def _versions(database: Database) -> None:
    """One dataset version on each cluster (as an agent would have recorded them)."""
    with database.write(actor="test") as unit:
        project = unit.session.scalars(select(Project).where(Project.name == "p")).one()
        admin = unit.session.scalars(select(User).where(User.username == "admin")).one()
        for cluster_name in SITES:
            cluster = unit.session.scalars(select(Cluster).where(Cluster.name == cluster_name))
            dataset = Dataset(project_id=project.id, name=f"d-{cluster_name}")
            unit.session.add(dataset)
            unit.session.flush()
            unit.session.add(
                DatasetVersion(
                    dataset_id=dataset.id,
                    version=1,
                    schema_={"kind": "table", "columns": COLUMNS, "published": True},
                    row_count=100,
                    manifest_hash="0" * 64,
                    summaries={},
                    created_by=admin.id,
                    cluster_id=cluster.one().id,
                    target="y",
                )
            )
        unit.record("test.versions", "dataset:p", {})


def _spec(**change: Any) -> dict[str, Any]:
    return {
        "name": "fed",
        "project": "p",
        "federated": {
            "clusters": list(SITES),
            "aggregator": "c1",
            "rounds": 1,
            "secure_aggregation": False,  # SecAgg+ needs 3 sites; these tests need 2
        },
        "datasets": {c: f"d-{c}@1" for c in SITES},
        "model": {"builtin": "mlp", "hidden": [4]},
        **change,
    }


@pytest.fixture
def federation(
    sdk_plane: tuple[Client, Database], tmp_path: Path
) -> tuple[Client, dict[str, Client], str]:
    """A submitted federated run and its three leased runs' job clients (the aggregator's
    and each site's), by member; the agents' clients as ``agent-c1``, ``agent-c2``."""
    admin, database = sdk_plane
    transport = admin._http._transport
    admin.create_project("p")
    joined = {c: _join(admin, c, tmp_path) for c in SITES}
    _versions(database)
    run = admin.submit_run(_spec())
    jobs: dict[str, Client] = {}
    for cluster, (token, keys) in joined.items():
        agent = Client(admin.url, token=token, transport=transport)
        jobs[f"agent-{cluster}"] = agent
        while (lease := agent.lease(cluster, wait=0)) is not None:
            kind = lease.spec["job"]["type"]
            member = "aggregator" if kind == "federated" else lease.spec["job"]["site"]
            jobs[member] = Client(admin.url, token=lease.job_token, transport=transport)
            jobs[member].own_run = lease.run_id  # type: ignore[attr-defined]
            jobs[member].keyring = keys  # type: ignore[attr-defined]  # its cluster's
    assert set(jobs) == {"aggregator", *SITES, "agent-c1", "agent-c2"}
    return admin, jobs, run.id


def _own(job: Client) -> str:
    return str(job.own_run)  # type: ignore[attr-defined]


def _endorsed(job: Client, material: str, *, run: str | None = None) -> str:
    """``material`` endorsed by the job's cluster for its own run (or ``run``), as that
    cluster's agent does."""
    keys: Keyring = job.keyring  # type: ignore[attr-defined]
    return endorse.endorse(keys.signer().sign, run_id=run or _own(job), material=material)


def test_the_submit_queues_one_site_run_per_cluster(
    federation: tuple[Client, dict[str, Client], str],
) -> None:
    admin, _, run_id = federation
    runs = {r.name: r for r in admin.list_runs("p")}
    assert set(runs) == {"fed", "fed (site c1)", "fed (site c2)"}
    assert runs["fed"].id == run_id
    assert runs["fed (site c2)"].spec["job"] == {
        "type": "federated-site",
        "run": run_id,
        "site": "c2",
        "dataset": "d-c2@1",
    }


def test_a_site_run_cannot_be_submitted_by_hand(sdk_plane: tuple[Client, Database]) -> None:
    admin, _ = sdk_plane
    admin.create_project("p")
    admin.create_cluster("c1")
    spec = {
        "name": "forged",
        "project": "p",
        "cluster": "c1",
        "job": {"type": "federated-site", "run": "0" * 32, "site": "c1", "dataset": "d@1"},
    }
    with pytest.raises(InvalidSpec, match="queued with its federated run"):
        admin.submit_run(spec)


def test_participants_meet_through_public_material_only(
    federation: tuple[Client, dict[str, Client], str], tmp_path: Path
) -> None:
    admin, jobs, run_id = federation
    _, public = site_key(tmp_path, "c2")
    key = public.read_text().strip()
    seen = jobs["c2"].join_federation(
        "p", _own(jobs["c2"]), public_key=key, endorsement=_endorsed(jobs["c2"], key)
    )
    assert seen.member == "c2" and seen.aggregator is None and seen.run == run_id
    view = jobs["aggregator"].federation("p", run_id)
    assert view.sites is not None
    assert view.sites["c2"]["public_key"] == key
    endorse.check(  # the aggregator's job checks it too, against c2's published key
        jobs["c2"].keyring.primary_signing_key().public_pem.decode(),  # type: ignore[attr-defined]
        run_id=view.sites["c2"]["run"],
        material=key,
        endorsement=view.sites["c2"]["endorsement"],
        who="c2",
    )
    assert view.sites["c1"]["public_key"] is None
    certificate = link_certificates(tmp_path / "tls", host="127.0.0.1").ca.read_text()
    endorsement = _endorsed(jobs["aggregator"], certificate)
    jobs["aggregator"].join_federation(
        "p", run_id, address="127.0.0.1:9092", certificate=certificate, endorsement=endorsement
    )
    site_view = jobs["c1"].federation("p", _own(jobs["c1"]))
    assert site_view.aggregator == {
        "address": "127.0.0.1:9092",
        "certificate": certificate,
        "endorsement": endorsement,
    }
    assert site_view.sites is None  # no other site's key
    joined = [e.details for e in admin.audit_events(limit=100) if e.action == "federated.join"]
    assert [d["member"] for d in joined] == ["c2", "aggregator"]


@pytest.mark.parametrize(
    ("member", "body", "message"),
    [
        (
            "c1",
            {"public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE", "endorsement": "x"},
            "ECDSA P-384",
        ),
        ("c1", {"public_key": "x", "address": "127.0.0.1:1"}, "exactly 'public_key' and"),
        ("c1", {"refused": ["0" * 64]}, "exactly 'public_key'"),
        (
            "aggregator",
            {"address": "127.0.0.1:1", "certificate": "x"},
            "exactly 'address', 'certificate' and 'endorsement'",
        ),
        (
            "aggregator",
            {"address": "no port", "certificate": "x", "endorsement": "x"},
            "HOST:PORT",
        ),
        (
            "aggregator",
            {"address": "127.0.0.1:1", "certificate": "x", "endorsement": "x"},
            "one PEM certificate",
        ),
    ],
)
def test_bad_material_is_refused_naming_it(
    federation: tuple[Client, dict[str, Client], str],
    member: str,
    body: dict[str, Any],
    message: str,
) -> None:
    _, jobs, _ = federation
    with pytest.raises(InvalidInput, match=message):
        jobs[member].join_federation("p", _own(jobs[member]), **body)


def test_only_a_federated_runs_own_jobs_take_part(
    federation: tuple[Client, dict[str, Client], str], tmp_path: Path
) -> None:
    admin, jobs, run_id = federation
    _, public = site_key(tmp_path, "x")
    # A site's job speaks for its own run only: not the aggregator's, not another site's.
    with pytest.raises(NotAuthorized, match="own run"):
        jobs["c2"].federation("p", run_id)
    with pytest.raises(NotAuthorized, match="own run"):
        jobs["c2"].join_federation("p", _own(jobs["c1"]), public_key=public.read_text())
    # A person is no participant; nor is the agent holding the lease (it relays, it does
    # not take part).
    with pytest.raises(NotAuthorized):
        admin.federation("p", run_id)
    with pytest.raises(NotAuthorized, match="only a federated run's jobs"):
        jobs["agent-c1"].federation("p", run_id)


def test_a_run_that_claims_to_be_a_site_is_not_one(
    federation: tuple[Client, dict[str, Client], str],
    sdk_plane: tuple[Client, Database],
    tmp_path: Path,
) -> None:
    """A site run the control plane did not queue with the federated run (written straight
    into the database here: no route makes one) is refused at the meeting point."""
    admin, jobs, run_id = federation
    _, database = sdk_plane
    with database.write(actor="test") as unit:
        project = unit.session.scalars(select(Project).where(Project.name == "p")).one()
        cluster = unit.session.scalars(select(Cluster).where(Cluster.name == "c2")).one()
        creator = unit.session.scalars(select(User).where(User.username == "admin")).one()
        job = {"type": "federated-site", "run": run_id, "site": "c2", "dataset": "d-c2@1"}
        spec = {"name": "impostor", "project": "p", "cluster": "c2", "job": job}
        unit.session.add(
            Run(
                project_id=project.id,
                cluster_id=cluster.id,
                name="impostor",
                spec=spec,
                created_by=creator.id,
            )
        )
        unit.record("test.impostor", "run:impostor", {})
    lease = jobs["agent-c2"].lease("c2", wait=0)
    assert lease is not None and lease.spec["name"] == "impostor"
    _, public = site_key(tmp_path, "impostor")
    transport = admin._http._transport
    with (
        Client(admin.url, token=lease.job_token, transport=transport) as impostor,
        pytest.raises(NotAuthorized, match="is not a site of federated run"),
    ):
        impostor.join_federation(
            "p",
            lease.run_id,
            public_key=public.read_text().strip(),
            endorsement=_endorsed(jobs["c2"], public.read_text(), run=lease.run_id),
        )


def test_nothing_is_posted_once_the_federated_run_ended(
    federation: tuple[Client, dict[str, Client], str], tmp_path: Path
) -> None:
    admin, jobs, run_id = federation
    admin.cancel_run("p", run_id)
    _, public = site_key(tmp_path, "late")
    with pytest.raises(Conflict, match="already ended"):
        jobs["c2"].join_federation(
            "p",
            _own(jobs["c2"]),
            public_key=public.read_text().strip(),
            endorsement=_endorsed(jobs["c2"], public.read_text()),
        )
    assert jobs["c2"].federation("p", _own(jobs["c2"])).status == "cancelled"


def test_the_aggregator_reports_refused_nodes_to_the_audit_log(
    federation: tuple[Client, dict[str, Client], str],
) -> None:
    admin, jobs, run_id = federation
    jobs["aggregator"].join_federation("p", run_id, refused=["ab" * 32])
    refused = [e for e in admin.audit_events(limit=100) if e.action == "federated.node_refused"]
    assert [(e.target, e.details["key_sha256"]) for e in refused] == [(f"run:{run_id}", "ab" * 32)]


def test_material_its_clusters_agent_did_not_endorse_is_refused(
    federation: tuple[Client, dict[str, Client], str], tmp_path: Path
) -> None:
    """A node key or CA is recorded only with the endorsement of the poster's own cluster
    (the signing key it published when it joined), for the poster's own run."""
    _, jobs, run_id = federation
    _, public = site_key(tmp_path, "c2")
    key = public.read_text().strip()
    _, other = site_key(tmp_path, "other")
    site, own = jobs["c2"], _own(jobs["c2"])
    refused = {
        "by another cluster": _endorsed(jobs["aggregator"], key, run=own),
        "for another run": _endorsed(site, key, run=run_id),
        "of another key": _endorsed(site, other.read_text()),
        "garbage": "bm90IGEgc2lnbmF0dXJl",
        "not base64": "%%%",
    }
    for why, endorsement in refused.items():
        with pytest.raises(SignatureError, match="site c2's node key"):
            site.join_federation("p", own, public_key=key, endorsement=endorsement)
        seen = jobs["aggregator"].federation("p", run_id).sites
        assert seen is not None and seen["c2"]["public_key"] is None, why
    certificate = link_certificates(tmp_path / "tls", host="127.0.0.1").ca.read_text()
    with pytest.raises(SignatureError, match="the aggregator's CA certificate"):
        jobs["aggregator"].join_federation(
            "p",
            run_id,
            address="127.0.0.1:9092",
            certificate=certificate,
            endorsement=_endorsed(site, certificate, run=run_id),  # c2 is not the aggregator
        )
    assert jobs["c1"].federation("p", _own(jobs["c1"])).aggregator is None
