"""Data-parallel training through the agent: ``resources.workers: 2`` trains with DDP over
two processes inside the job's sandbox (gloo on its own loopback), with and without DP; a
worker killed mid-training restarts the group from the last checkpoint, and the run ends
with the model an uninterrupted run makes."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent.test_agent_e2e import Plane, _wait_status, register_patients, running_plane


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    with running_plane(tmp_path_factory.mktemp("parallel-plane")) as started:
        register_patients(started, rows=1200)
        yield started


def _spec(name: str, workers: int, **train: Any) -> dict[str, Any]:
    return {
        "name": name,
        "project": "p",
        "cluster": "c1",
        "dataset": "patients@1",
        "model": {"builtin": "mlp", "hidden": [32]},
        # Epochs enough that the killed run's worker is still training after its first
        # checkpoint (a worker leaves the moment its share is done).
        "train": {"epochs": 12, "batch_size": 64, "lr": 0.2, "seed": 7, **train},
        "resources": {"workers": workers},
    }


def _train(plane: Plane, spec: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    run = plane.admin.submit_run(spec)
    done = _wait_status(plane.admin, run.id, {"succeeded", "failed"}, timeout=240)
    logs = [line.line for line in plane.admin.run_logs("p", run.id)]
    assert done.status == "succeeded", (done.status_reason, logs[-20:])
    versions = plane.admin.model_versions("p", spec["name"])
    return dict(versions[0].evidence), logs


@pytest.fixture(scope="module")
def together(plane: Plane) -> tuple[dict[str, Any], list[str]]:
    """A 2-worker run left alone: the reference for the single-process and killed runs."""
    return _train(plane, _spec("together", 2))


def test_two_workers_train_the_single_process_model(
    plane: Plane, together: tuple[dict[str, Any], list[str]]
) -> None:
    alone, _ = _train(plane, _spec("alone", 1))
    together_evidence, logs = together
    assert any(line.startswith("2 workers train data-parallel") for line in logs), logs
    assert (alone["workers"], together_evidence["workers"]) == (1, 2)
    for one, two in zip(alone["history"], together_evidence["history"], strict=True):
        assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
    assert together_evidence["test_accuracy"] == pytest.approx(alone["test_accuracy"], abs=0.005)


def test_two_private_workers_spend_the_target_epsilon(plane: Plane) -> None:
    privacy = {"target_epsilon": 2.0, "delta": 1e-5, "max_grad_norm": 1.0}
    evidence, _ = _train(plane, _spec("private-together", 2, privacy=privacy))
    assert 1.8 < evidence["epsilon"] <= 2.0
    assert [h["epsilon"] for h in evidence["history"]] == sorted(
        h["epsilon"] for h in evidence["history"]
    )


def _workers_of(agent_pid: int) -> list[int]:
    """The spawned training workers among the agent's descendants (host pids)."""
    parents: dict[int, int] = {}
    commands: dict[int, bytes] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            commands[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == agent_pid:
                return True
        return False

    return [pid for pid, command in commands.items() if b"spawn_main" in command and descends(pid)]


def test_a_killed_worker_restarts_from_the_last_checkpoint(
    plane: Plane, together: tuple[dict[str, Any], list[str]]
) -> None:
    whole = together[0]
    run = plane.admin.submit_run(_spec("killed", 2))
    # Rank 0 keeps a copy of each checkpoint in the job's folder as it writes it (renamed
    # into place whole); the first one there, worker 1 is killed mid-training. The agent's
    # "step N sealed" comes later: it seals every 0.5 s, the whole training may be over.
    folder = plane.storage / "runs" / run.id / "attempt-1" / "parallel"
    deadline = time.monotonic() + 120
    while not (folder / "resume" / "trainer.json").is_file():
        assert time.monotonic() < deadline, plane.admin.get_run("p", run.id)
        time.sleep(0.01)
    spawned = _workers_of(plane.agent.pid)
    assert len(spawned) == 1, spawned  # rank 1 (rank 0 is the job's own process)
    os.kill(spawned[0], signal.SIGKILL)
    done = _wait_status(plane.admin, run.id, {"succeeded", "failed"}, timeout=240)
    logs = [line.line for line in plane.admin.run_logs("p", run.id)]
    assert done.status == "succeeded" and done.attempt == 1, (done.status_reason, logs[-20:])
    assert any(
        line.startswith(
            "worker 1 exited with signal 9; starting the 2 workers again from its last checkpoint"
        )
        for line in logs
    ), logs
    resumed = plane.admin.model_versions("p", "killed")[0].evidence
    assert resumed["weights_sha256"] == whole["weights_sha256"]
    assert resumed["history"] == whole["history"]
