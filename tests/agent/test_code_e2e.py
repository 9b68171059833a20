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

import httpx
import pytest
import yaml

from bastion.client import Client
from bastion.data.reference import PATIENT_PII_COLUMNS, patients
from bastion.security.transfer import seal_for_cluster
from tests.agent.test_agent_e2e import Plane, _wait_status, register_patients, running_plane
from tests.inference.conftest import free_port
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

def read_by_path(*, input_shape, classes):
    read = []
    for path in SECRETS:
        try:
            with open(path, "rb") as handle:
                handle.read()
            read.append(path)
        except OSError:
            pass
    raise RuntimeError(f"read: {read or 'nothing'}")

def write_outside(*, input_shape, classes):
    written = []
    for path in TARGETS:
        try:
            with open(path, "w") as handle:
                handle.write("from the job")
            written.append(path)
        except OSError:
            pass
    raise RuntimeError(f"written: {written or 'nothing'}")

def hog_memory(*, input_shape, classes):
    ballast = bytearray(3 << 30)
    raise RuntimeError(f"allocated {len(ballast)} bytes")

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
        register_patients(started, rows=300)
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
    # What the agent holds: its keys and credential, other runs' folders and the storage root.
    secrets = [str(p) for p in sorted(plane.agent_home.iterdir()) if p.is_file()]
    secrets += [str(p) for p in sorted(plane.storage.rglob("*")) if p.is_file()][:50]
    targets = [str(plane.agent_home / "planted"), str(plane.storage / "planted")]
    (package / "steal.py").write_text(
        f"PLACES = {places!r}\nSECRETS = {secrets!r}\nTARGETS = {targets!r}\n{ATTACKS}"
    )
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
    assert any(p.is_file() for p in plane.agent_home.iterdir())  # there were keys to find


def test_a_package_reads_nothing_of_the_agent_by_path(
    plane: Plane, attacks: str, tmp_path: Path
) -> None:
    reason = _failed(plane, tmp_path, "read-by-path", "attacks.steal:read_by_path", attacks)
    assert "read: nothing" in reason, reason


def test_a_package_writes_nothing_outside_its_folder(
    plane: Plane, attacks: str, tmp_path: Path
) -> None:
    reason = _failed(plane, tmp_path, "write-outside", "attacks.steal:write_outside", attacks)
    # Inside, a path under /tmp may be written: it is the sandbox's own private /tmp.
    assert "written:" in reason, reason
    assert not (plane.agent_home / "planted").exists()
    assert not (plane.storage / "planted").exists()


def test_a_package_cannot_allocate_past_the_limit(
    plane: Plane, attacks: str, tmp_path: Path
) -> None:
    reason = _failed(
        plane,
        tmp_path,
        "hog-memory",
        "attacks.steal:hog_memory",
        attacks,
        resources={"memory_mb": 2048},
    )
    assert "ran out of memory" in reason and "allocated" not in reason, reason


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


def test_a_code_model_is_gated_on_review_promoted_and_served(plane: Plane, tmp_path: Path) -> None:
    """The benign package's model: evaluated, held back until its code is reviewed, promoted,
    then served by an inference server that loads the same signed package."""
    home = plane.client_home
    if not any(p.name == "tabular-resnet" for p in plane.admin.list_code("p")):
        assert _push(plane, EXAMPLE, "tabular-resnet")[0] == 0
    spec = _spec(
        "resnet-serve",
        "tabular_resnet.model:build",
        "tabular-resnet@1",
        train={
            "epochs": 3,
            "batch_size": 64,
            "lr": 0.5,
            "privacy": {"target_epsilon": 5.0, "delta": 1e-5, "max_grad_norm": 1.0},
        },
        evaluate={"robustness": {"eps": [0.05], "steps": 3, "max_rows": 100}},
    )
    code, output = _train(plane, tmp_path, spec)
    assert code == 0, output
    policy = tmp_path / "production.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "min_accuracy": 0.5,
                "max_epsilon": 5.0,
                "code_reviewed": True,
                "require_sandbox": True,
                "approvals": 0,
            }
        )
    )
    put = _bastion(home, "policy", "put", "production", "-p", "p", "--file", str(policy))
    assert put.returncode == 0, put.stderr
    promote = ("model", "promote", "resnet-serve@1", "-p", "p", "--to", "production")
    held = _bastion(home, *promote)
    assert held.returncode != 0 and "gate(s) failed: code_reviewed" in held.stderr, held.stderr
    approvals = plane.admin.list_approvals("p")
    gates = {g["gate"]: g["actual"] for g in approvals[-1].gate_results}
    assert gates["code_reviewed"] == "tabular-resnet@1 not reviewed"
    # A reviewer (not the pusher) approves the code; the same promotion then passes.
    plane.admin.create_user("rita", password="correct horse battery staple")
    plane.admin.set_member("p", "rita", "reviewer")
    with Client(plane.url) as anonymous:
        session = anonymous.login("rita", "correct horse battery staple")
    with Client(plane.url, token=session.token) as reviewer:
        reviewer.review_code("p", "tabular-resnet", 1, verdict="approved", comment="read it")
    passed = _bastion(home, *promote)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    port = free_port()
    deploy = ("deploy", "create", "resnet-serve@1", "-p", "p", "--cluster", "c1")
    started = _bastion(home, *deploy, "--port", str(port))
    logs = [p.read_text()[-3000:] for p in plane.storage.glob("runs/*/attempt-*/job.log")]
    assert started.returncode == 0, started.stdout + started.stderr + "\n".join(logs[-2:])
    key = _bastion(home, "keys", "create", "-d", "resnet-serve", "-p", "p", "--rate", "100/s")
    assert key.returncode == 0, key.stdout + key.stderr
    bearer = {"Authorization": f"Bearer {key.stdout.strip().splitlines()[-1]}"}
    frame = patients(seed=0, rows=300).drop(
        columns=[*PATIENT_PII_COLUMNS, "subject_id", "diagnosis"], errors="ignore"
    )
    rows = [{str(k): v for k, v in r.items()} for r in frame.head(2).to_dict(orient="records")]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        deadline = time.monotonic() + 15
        while True:  # the key reaches the server with its next refresh
            answered = http.post("/v1/predict", json={"instances": rows}, headers=bearer)
            if answered.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert answered.status_code == 200, answered.text
    assert answered.json()["model"] == "resnet-serve@1"
    assert len(answered.json()["predictions"]) == 2
    # A version of the same model built without that code cannot be swapped into the server.
    builtin = {**_spec("resnet-serve", "x:y", "x@1"), "model": {"builtin": "logreg"}}
    builtin["train"] = {**spec["train"], "epochs": 2}
    del builtin["code"]
    code, output = _train(plane, tmp_path, builtin)
    assert code == 0, output
    promoted = _bastion(home, "model", "promote", "resnet-serve@2", "-p", "p", "--to", "production")
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    update = ("deploy", "update", "resnet-serve", "-p", "p", "--model", "resnet-serve@2")
    swap = _bastion(home, *update)
    assert swap.returncode != 0 and "built from different code" in swap.stderr, swap.stderr
    stopped = _bastion(home, "deploy", "stop", "resnet-serve", "-p", "p")
    assert stopped.returncode == 0, stopped.stderr
