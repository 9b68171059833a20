"""Plaintext lives only while its attempt runs: the agent wipes what no job of its own runs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from bastion.agent.loop import Agent, AgentConfig, _Running
from bastion.agent.staging import wipe
from bastion.agent.storage import Storage
from bastion.client import LeaseOut
from bastion.config import Settings
from bastion.errors import ConfigurationError

#: What a training attempt leaves in its folder, plaintext first.
PLAINTEXT = (
    "inputs/input/data.npz",
    "inputs/checkpoint/weights.safetensors",
    "checkpoints/epoch-2/weights.safetensors",
    "sealing/epoch-3/weights.safetensors",
    "outputs/model/weights.safetensors",
    "swap-0123456789abcdef/inputs/model/weights.safetensors",
)
KEPT = ("job.json", "job.log")


def _attempt(storage: Storage, run_id: str, attempt: int) -> Path:
    workdir = storage.workdir(run_id, attempt)
    for name in (*PLAINTEXT, *KEPT):
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        (workdir / name).write_text(f"{run_id} {name}")
    return workdir


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


class _Handle:
    def __init__(self, request: Any) -> None:
        self.request = request
        self.killed = False

    def kill(self) -> None:
        self.killed = True


def _running(agent: Agent, run_id: str, attempt: int) -> _Handle:
    request = SimpleNamespace(attempt=attempt, workdir=agent.storage.attempt_dir(run_id, attempt))
    handle = _Handle(request)
    lease = LeaseOut(
        run_id=run_id,
        project="p",
        attempt=attempt,
        spec={},
        job_token="t",
        lease_seconds=30,
        resume_from=None,
    )
    agent.state.jobs[run_id] = _Running(handle=cast(Any, handle), lease=lease)
    return handle


@pytest.fixture
def agent(settings: Settings, tmp_path: Path) -> Agent:
    config = AgentConfig(cluster="c", url="http://127.0.0.1:9", storage=tmp_path / "storage")
    return Agent(config, settings)


def test_a_starting_agent_wipes_what_a_killed_agent_left_and_keeps_what_is_sealed(
    agent: Agent,
) -> None:
    storage = agent.storage
    left = _attempt(storage, "r-killed", 1)  # its agent was SIGKILLed mid-run
    sealed = [
        storage.root / "checkpoints" / "p" / "r-killed" / ("a" * 64) / "weights.safetensors.bst",
        storage.root / "datasets" / "p" / "digits" / ("b" * 64) / "data.npz.bst",
        storage.root / "datasets" / "p" / "digits" / ("b" * 64) / "manifest.json",
    ]
    for path in sealed:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"ciphertext")
    agent.stop()  # run() wipes before its loop (which then ends at once)
    agent.run()
    assert _files(left) == sorted(KEPT)
    assert all(path.read_bytes() == b"ciphertext" for path in sealed)


def test_only_attempts_no_job_of_this_agent_runs_are_wiped(agent: Agent) -> None:
    storage = agent.storage
    left = _attempt(storage, "r-killed", 1)
    running = _attempt(storage, "r-running", 3)
    staging = _attempt(storage, "r-staging", 2)
    _running(agent, "r-running", 3)
    agent.state.staging["r-staging"] = 2
    agent._wipe_unowned()
    assert _files(left) == sorted(KEPT)
    assert _files(running) == _files(staging) == sorted((*PLAINTEXT, *KEPT))


def test_a_stopping_agent_kills_its_jobs_and_wipes_their_plaintext(agent: Agent) -> None:
    running = _attempt(agent.storage, "r", 1)
    handle = _running(agent, "r", 1)
    agent.stop()
    agent.run()
    assert handle.killed
    assert _files(running) == sorted(KEPT)


def test_a_superseded_attempt_is_stopped_and_wiped_when_the_next_is_leased(agent: Agent) -> None:
    storage = agent.storage
    old = _attempt(storage, "r", 1)
    orphan = _attempt(storage, "other", 1)  # another run's: wiped at start, not here
    handle = _running(agent, "r", 1)
    agent._supersede("r", 2)
    assert handle.killed and "r" not in agent.state.jobs
    assert _files(old) == sorted(KEPT)
    assert _files(orphan) == sorted((*PLAINTEXT, *KEPT))
    # The attempt the lease names (a retry of the same attempt) is not superseded.
    current = _running(agent, "other", 1)
    agent._supersede("other", 1)
    assert not current.killed and _files(orphan) == sorted((*PLAINTEXT, *KEPT))


def test_a_stop_for_an_older_attempt_spares_the_newer_one(agent: Agent) -> None:
    handle = _running(agent, "r", 2)
    agent._kill({"r": 1})  # the heartbeat sent attempt 1, then attempt 2 started
    assert not handle.killed
    agent._kill({"r": 2})
    assert handle.killed


def test_wipe_says_whether_there_was_plaintext(tmp_path: Path) -> None:
    workdir = _attempt(Storage(tmp_path), "r", 1)
    assert wipe(workdir) is True
    assert _files(workdir) == sorted(KEPT)
    assert wipe(workdir) is False


def test_one_storage_root_serves_one_agent(tmp_path: Path) -> None:
    first = Storage(tmp_path / "storage")
    first.check()
    first.claim()
    second = Storage(tmp_path / "storage")
    with pytest.raises(ConfigurationError, match="another agent runs jobs from this storage"):
        second.claim()


def test_a_stopping_agent_tells_the_control_plane_it_leaves(agent: Agent) -> None:
    beats: list[tuple[dict[str, int], bool]] = []

    class _Client:
        def heartbeat(
            self, cluster: str, runs: dict[str, int], *, stopping: bool = False
        ) -> dict[str, Any]:
            beats.append((runs, stopping))
            return {"stop": [], "serve": {}}

    agent._client = cast(Any, _Client())
    agent.stop()
    agent.run()
    assert beats[-1] == ({}, True)
