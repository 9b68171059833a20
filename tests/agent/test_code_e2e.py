"""Users' code end to end: pushed sealed, checked and registered by the agent, trained with DP
in the sandbox, pinned in lineage and the card; hostile packages refused or contained."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bastion.data.reference import patients
from bastion.security.transfer import seal_for_cluster
from tests.agent.test_agent_e2e import Plane, _wait_status, running_plane
from tests.server.test_live import _bastion

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "code" / "tabular_resnet"

#: A package whose entrypoints attack from inside the training job.
ATTACKS = """
import os, socket, time, torch

def _model(classes):
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(classes))

def walk_for_keys(*, input_shape, classes):
    found = []
    for root, dirs, files in os.walk("/"):
        skip = ("/proc", "/sys", "/dev", "/usr")
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in skip]
        for name in files:
            if name in ("master.key", "keyring.json") or name.startswith("agent-"):
                found.append(os.path.join(root, name))
    raise RuntimeError(f"keys found: {found or 'none'}")

def dial_out(*, input_shape, classes):
    reached = []
    for address in PLACES:
        try:
            socket.create_connection(address, timeout=3).close()
            reached.append(address)
        except OSError:
            pass
    raise RuntimeError(f"reached: {reached or 'nothing'}")

def fork_storm(*, input_shape, classes):
    children = 0
    while children < 500:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        children += 1
    raise RuntimeError(f"forked {children} processes")

def leave_a_daemon(*, input_shape, classes):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execvp("sleep", ["sleep", "600", "left-behind-by-code"])
        os._exit(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(input_shape[0], classes))
"""


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    with running_plane(tmp_path_factory.mktemp("code-plane"), lease_seconds=5) as started:
        incoming = started.storage.parent / "incoming"
        patients(seed=0, rows=300).to_csv(incoming / "patients.csv", index=False)
        done = _bastion(
            started.client_home,
            "data",
            "register",
            str(incoming / "patients.csv"),
            "--name",
            "patients",
            "-p",
            "p",
            "--target",
            "diagnosis",
            "--subject-id-column",
            "subject_id",
        )
        assert done.returncode == 0, done.stdout + done.stderr
        yield started


def _push(plane: Plane, folder: Path, name: str) -> tuple[int, str]:
    done = _bastion(plane.client_home, "code", "push", str(folder), "-p", "p", "--name", name)
    return done.returncode, done.stdout + done.stderr


def _train(plane: Plane, tmp_path: Path, spec: dict[str, Any]) -> tuple[int, str]:
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    done = _bastion(plane.client_home, "run", "submit", str(path), "--follow")
    return done.returncode, done.stdout + done.stderr


def _spec(name: str, entrypoint: str, code: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "project": "p",
        "cluster": "c1",
        "dataset": "patients@1",
        "code": code,
        "model": {"entrypoint": entrypoint},
        "train": {"epochs": 2, "batch_size": 64, "lr": 0.3},
        **extra,
    }


def test_a_benign_package_trains_with_dp_and_is_pinned(plane: Plane, tmp_path: Path) -> None:
    code, output = _push(plane, EXAMPLE, "tabular-resnet")
    assert code == 0, output
    assert "registered code tabular-resnet@1" in output
    version = plane.admin.code_version("p", "tabular-resnet", 1)
    assert version.status == "registered" and version.manifest_hash
    assert {f.path for f in version.files} == {
        "pyproject.toml",
        "tabular_resnet/__init__.py",
        "tabular_resnet/model.py",
        "tabular_resnet/transforms.py",
    }
    model_py = (EXAMPLE / "tabular_resnet" / "model.py").read_bytes()
    listed = {f.path: f.sha256 for f in version.files}
    assert listed["tabular_resnet/model.py"] == hashlib.sha256(model_py).hexdigest()
    # The control plane relayed the code sealed and keeps its hashes, never its text.
    database = (plane.storage.parent / "server" / "control-plane.db").read_bytes()
    assert b"class TabularResNet" not in database and b"TabularResNet" not in database
    spec = _spec(
        "resnet-dp",
        "tabular_resnet.model:build",
        "tabular-resnet@1",
        data={"transform": "tabular_resnet.transforms:add_ratios"},
        sensitive_features=["sex"],
        train={
            "epochs": 2,
            "batch_size": 64,
            "lr": 0.5,
            "privacy": {"target_epsilon": 3.0, "delta": 1e-5, "max_grad_norm": 1.0},
        },
        evaluate={"robustness": {"eps": [0.05], "steps": 3, "max_rows": 100}},
    )
    code, output = _train(plane, tmp_path, spec)
    assert code == 0, output
    assert "data.transform tabular_resnet.transforms:add_ratios" in output
    (trained,) = plane.admin.model_versions("p", "resnet-dp")
    assert trained.evidence["code"] == "tabular-resnet@1"
    assert trained.evidence["code_manifest_hash"] == version.manifest_hash
    assert trained.evidence["epsilon"] is not None and trained.evidence["epsilon"] <= 3.0
    assert any(f.startswith("ratio_") for f in trained.evidence["features"])
    card = plane.admin.model_card("p", "resnet-dp", 1)
    assert card["training"]["code"] == "tabular-resnet@1"
    assert card["training"]["isolation"] == "bubblewrap"
    graph = plane.admin.lineage("p", "model:resnet-dp@1")
    assert "code:tabular-resnet@1" in {node["id"] for node in graph["nodes"]}
    # Reviews: never by the person who pushed it (the admin pushed it here).
    refused = _bastion(plane.client_home, "code", "review", "tabular-resnet@1", "-p", "p")
    assert refused.returncode != 0 and "two-person rule" in refused.stderr
    # A run cannot name code that does not exist, nor an entrypoint without its code.
    code, output = _train(plane, tmp_path, _spec("nope", "x.y:z", "ghost@1"))
    assert code != 0 and "code ghost@1 does not exist" in output
    bare = {k: v for k, v in _spec("bare", "tabular_resnet.model:build", "x@1").items()}
    del bare["code"]
    code, output = _train(plane, tmp_path, bare)
    assert code != 0 and "name the code package it comes from" in output


def test_a_package_the_cli_would_refuse_is_refused_by_the_agent(plane: Plane) -> None:
    """A pusher who skips the CLI's checks (a pickle in the archive) meets the agent's."""
    payload = {"model.py": b"def build(**k):\n    pass\n", "table.dat": pickle.dumps({"a": 1})}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in payload.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    body = buffer.getvalue()
    cluster = plane.admin.get_cluster("c1")
    assert cluster.hybrid_public_keyset
    pushed = plane.admin.request(
        "POST",
        "/api/v1/projects/p/code",
        json={
            "name": "sneaky",
            "cluster": "c1",
            "files": [
                {"path": n, "sha256": hashlib.sha256(d).hexdigest(), "size": len(d)}
                for n, d in payload.items()
            ],
            "archive_sha256": hashlib.sha256(body).hexdigest(),
            "sealed": seal_for_cluster(
                body,
                purpose="code",
                recipient="c1",
                recipient_keyset=cluster.hybrid_public_keyset,
            ),
        },
    )
    _wait_status(plane.admin, pushed["run_id"], {"failed"})
    version = plane.admin.code_version("p", "sneaky", 1)
    assert version.status == "refused" and "table.dat" in version.status_reason
    assert "pickle" in version.status_reason


@pytest.fixture(scope="module")
def attacks(plane: Plane, tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("attacks")
    package = folder / "attacks"
    package.mkdir()
    (package / "__init__.py").write_text("")
    places = [("127.0.0.1", int(plane.url.rsplit(":", 1)[1])), ("127.0.0.1", 5432)]
    places += [("127.0.0.1", 6379), ("1.1.1.1", 443)]
    (package / "steal.py").write_text(f"PLACES = {places!r}\n{ATTACKS}")
    code, output = _push(plane, folder, "attacks")
    assert code == 0, output
    return "attacks@1"


def _failed(
    plane: Plane, tmp_path: Path, name: str, entrypoint: str, ref: str, **extra: Any
) -> str:
    code, output = _train(plane, tmp_path, _spec(name, entrypoint, ref, **extra))
    assert code != 0, output
    runs = [r for r in plane.admin.list_runs("p") if r.name == name]
    assert runs and runs[0].status == "failed", runs
    audited = [
        e.details
        for e in plane.admin.audit_events(limit=1000)
        if e.target == f"run:{runs[0].id}" and e.action == "run.status"
    ]
    assert any(d.get("to") == "failed" for d in audited), audited
    return runs[0].status_reason


def test_a_package_finds_no_keys_anywhere(plane: Plane, attacks: str, tmp_path: Path) -> None:
    reason = _failed(plane, tmp_path, "steal-keys", "attacks.steal:walk_for_keys", attacks)
    assert "keys found: none" in reason, reason
    assert (plane.agent_home / "master.key").exists() or (plane.agent_home / "keys").exists()


def test_a_package_reaches_no_network(plane: Plane, attacks: str, tmp_path: Path) -> None:
    reason = _failed(plane, tmp_path, "dial-out", "attacks.steal:dial_out", attacks)
    assert "reached: nothing" in reason, reason


def test_a_fork_storm_meets_the_process_limit(plane: Plane, attacks: str, tmp_path: Path) -> None:
    reason = _failed(
        plane,
        tmp_path,
        "fork-storm",
        "attacks.steal:fork_storm",
        attacks,
        resources={"processes": 64},
    )
    assert "forked 500" not in reason, reason
    assert "Resource temporarily unavailable" in reason or "process limit" in reason, reason


def test_no_process_of_a_package_outlives_its_job(
    plane: Plane, attacks: str, tmp_path: Path
) -> None:
    _train(plane, tmp_path, _spec("daemon", "attacks.steal:leave_a_daemon", attacks))
    deadline = time.monotonic() + 15
    while _left_behind():
        assert time.monotonic() < deadline, "a process started by the package outlived its job"
        time.sleep(0.2)


def _left_behind() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"left-behind-by-code" in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_code_show_lists_hashes_not_text(plane: Plane) -> None:
    shown = _bastion(plane.client_home, "code", "show", "attacks@1", "-p", "p", "-o", "json")
    assert shown.returncode == 0, shown.stderr
    body = json.loads(shown.stdout)
    assert body["status"] == "registered" and body["files"]
    assert "walk_for_keys" not in shown.stdout
