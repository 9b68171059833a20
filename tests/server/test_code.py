"""Code packages in the control plane: pushed sealed, registered only by the cluster's agent
with exactly the pushed files, reviewed under the two-person rule, gated by policy."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import select

from bastion.client import Client
from bastion.errors import Conflict, InvalidSpec, NotAuthorized
from bastion.governance.policy import evaluate_gates, parse_policy
from bastion.security.transfer import open_for_cluster
from bastion.server.db.models import Cluster, Project
from bastion.server.services import code as code_service
from tests.conftest import other_keyring
from tests.server.conftest import ControlPlane

FILES = {"pkg/__init__.py": b"", "pkg/model.py": b"def build(**kw):\n    return None\n"}


def _client(cp: ControlPlane, token: str) -> Client:
    return Client(str(cp.client.base_url), token=token, transport=cp.client._transport)


def _records(files: dict[str, bytes]) -> list[dict[str, object]]:
    return [
        {"path": p, "sha256": hashlib.sha256(d).hexdigest(), "size": len(d)}
        for p, d in sorted(files.items())
    ]


@pytest.fixture
def joined(control_plane: ControlPlane, role_tokens: dict[str, str], tmp_path: Path) -> Client:
    """The agent of cluster c1, joined with its keys (what code is sealed to)."""
    cp = control_plane
    with _client(cp, cp.admin_token) as admin:
        token = admin.new_join_token("c1").join_token
        keys = other_keyring(tmp_path / "agent")
        agent = admin.join_cluster(
            "c1",
            join_token=token,
            signing_public_key=keys.primary_signing_key().public_pem.decode(),
            hybrid_public_keyset=keys.hybrid_public_keyset(),
        )
    client = _client(cp, agent.token)
    client.keys = keys  # type: ignore[attr-defined]
    return client


def _push(cp: ControlPlane, token: str, folder: Path) -> dict[str, object]:
    for path, data in FILES.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)
    with _client(cp, token) as pusher:
        return pusher.push_code("p1", folder, name="pkg", cluster="c1").model_dump()


def test_a_push_is_registered_only_as_pushed_and_reviewed_by_another(
    control_plane: ControlPlane, role_tokens: dict[str, str], joined: Client, tmp_path: Path
) -> None:
    cp = control_plane
    pushed = _push(cp, role_tokens["ml-engineer"], tmp_path / "src")
    assert pushed["status"] == "pending" and pushed["version"] == 1
    assert pushed["pushed_by"] == "engineer"
    # The agent leases the register run and gets the archive sealed to its own key.
    lease = joined.lease("c1", wait=0)
    assert lease is not None and lease.spec["job"] == {
        "type": "register-code",
        "name": "pkg",
        "version": 1,
    }
    upload = lease.inputs["code_upload"]
    archive = open_for_cluster(
        upload["sealed"],
        purpose="code",
        recipient="c1",
        keyring=joined.keys,  # type: ignore[attr-defined]
    )
    assert hashlib.sha256(archive).hexdigest() == upload["archive_sha256"]
    record = {
        "run_id": lease.run_id,
        "manifest_hash": "a" * 64,
        "signature": "sig",
        "archive_sha256": upload["archive_sha256"],
    }
    # (2) anything but exactly the pushed files is refused
    other = {**FILES, "pkg/extra.py": b"x = 1\n"}
    with pytest.raises(Conflict, match="differs from what was pushed"):
        joined.record_code_version("p1", "pkg", 1, {**record, "files": _records(other)})
    # (1) only the agent holding the lease records it
    with _client(cp, cp.admin_token) as admin, pytest.raises(NotAuthorized):
        admin.record_code_version("p1", "pkg", 1, {**record, "files": _records(FILES)})
    done = joined.record_code_version("p1", "pkg", 1, {**record, "files": _records(FILES)})
    assert done.status == "registered" and done.manifest_hash == "a" * 64
    # Reviews: never by its pusher, a reviewer may.
    with _client(cp, role_tokens["ml-engineer"]) as pusher, pytest.raises(NotAuthorized):
        pusher.review_code("p1", "pkg", 1, verdict="approved")  # not a reviewer either
    with _client(cp, cp.admin_token) as admin:  # an admin may review, but not what it pushed
        admin.push_code("p1", tmp_path / "src", name="mine", cluster="c1")
        with pytest.raises(Conflict, match="not registered yet"):
            admin.review_code("p1", "mine", 1, verdict="approved")
    with _client(cp, role_tokens["reviewer"]) as reviewer:
        reviewed = reviewer.review_code("p1", "pkg", 1, verdict="approved", comment="read it")
    assert [(r.verdict, r.comment) for r in reviewed.reviews] == [("approved", "read it")]
    with _client(cp, cp.admin_token) as admin:
        actions = [e.action for e in admin.audit_events(limit=200)]
    assert {"code.push", "code.register", "code.review"} <= set(actions)


def test_a_run_cannot_queue_registration_or_name_unregistered_code(
    control_plane: ControlPlane, role_tokens: dict[str, str], joined: Client, tmp_path: Path
) -> None:
    cp = control_plane
    with _client(cp, role_tokens["ml-engineer"]) as engineer:
        spec = {"name": "r", "project": "p1", "cluster": "c1"}
        with pytest.raises(InvalidSpec, match="bastion code push"):
            engineer.submit_run(
                {**spec, "job": {"type": "register-code", "name": "x", "version": 1}}
            )


def test_registered_code_is_used_only_on_the_cluster_that_holds_it(
    control_plane: ControlPlane, role_tokens: dict[str, str], joined: Client, tmp_path: Path
) -> None:
    """A run on another cluster naming pkg@1 is refused: that cluster's agent never checked
    it and holds no copy."""
    cp = control_plane
    _push(cp, role_tokens["ml-engineer"], tmp_path / "src")
    lease = joined.lease("c1", wait=0)
    assert lease is not None
    upload = lease.inputs["code_upload"]
    joined.record_code_version(
        "p1",
        "pkg",
        1,
        {
            "run_id": lease.run_id,
            "manifest_hash": "a" * 64,
            "signature": "sig",
            "archive_sha256": upload["archive_sha256"],
            "files": _records(FILES),
        },
    )
    with _client(cp, cp.admin_token) as admin:
        admin.create_cluster("c2")
    with cp.database.read() as session:
        project = session.scalars(select(Project).where(Project.name == "p1")).one()
        c1, c2 = (
            session.scalars(select(Cluster).where(Cluster.name == name)).one()
            for name in ("c1", "c2")
        )
        assert code_service.registered(
            session, project=project, ref="pkg@1", cluster_id=c1.id
        ).manifest_hash == ("a" * 64)
        with pytest.raises(Conflict, match="registered on cluster 'c1'; push it"):
            code_service.registered(session, project=project, ref="pkg@1", cluster_id=c2.id)


@pytest.mark.parametrize(
    ("training", "passed", "actual"),
    [
        ({}, True, "built-in model"),
        ({"code": "pkg@1", "code_reviews": []}, False, "pkg@1 not reviewed"),
        (
            {"code": "pkg@1", "code_reviews": [{"reviewer": "rita", "verdict": "approved"}]},
            True,
            "pkg@1 approved by rita",
        ),
        (
            {
                "code": "pkg@1",
                "code_reviews": [
                    {"reviewer": "rita", "verdict": "approved"},
                    {"reviewer": "sam", "verdict": "rejected"},
                ],
            },
            False,
            "pkg@1 rejected by sam",
        ),
    ],
)
def test_the_code_reviewed_gate(training: dict[str, object], passed: bool, actual: str) -> None:
    card = {
        "training": training,
        "membership": None,
        "robustness": None,
        "fairness": None,
        "data": {},
    }
    (result,) = evaluate_gates(parse_policy({"code_reviewed": True}), card)
    assert (result.gate, result.passed, result.actual) == ("code_reviewed", passed, actual)


@pytest.mark.parametrize(
    ("isolation", "passed"), [("bubblewrap", True), ("none", False), (None, False)]
)
def test_the_require_sandbox_gate(isolation: str | None, passed: bool) -> None:
    card = {
        "training": {"isolation": isolation},
        "membership": None,
        "robustness": None,
        "fairness": None,
        "data": {},
    }
    (result,) = evaluate_gates(parse_policy({"require_sandbox": True}), card)
    assert result.passed is passed
