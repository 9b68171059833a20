"""A job dies with its agent: lifeline pipe, parent-death signal, and a real agent SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bastion.agent.lifeline import LIFELINE_ENV, PARENT_DEATH_SIGNAL
from tests.agent.test_agent_e2e import _children, _descendants, _wait_status, running_plane

#: A job as the executor starts it, reduced to what matters here: it binds itself to its
#: agent, starts a worker in its process group and works; it prints the worker's pid.
JOB = """
import os, subprocess, sys, time
from bastion.agent.lifeline import die_with_agent
assert die_with_agent(os.environ)
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
print(worker.pid, flush=True)
time.sleep(300)
"""

#: An agent reduced to starting one job the way the executor does (parent-death signal
#: only, no lifeline), printing the job's pid, and waiting to be killed.
AGENT = """
import os, subprocess, sys
from bastion.agent.lifeline import bind_to_parent
me = os.getpid()
job = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(300)"],
    preexec_fn=lambda: bind_to_parent(me),
)
print(job.pid, flush=True)
job.wait()
"""


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _group(pgid: int) -> list[int]:
    """The live processes of a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def _wait_gone(pids: list[int], *, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while alive := [pid for pid in pids if _alive(pid)]:
        assert time.monotonic() < deadline, f"still running {seconds} s later: {alive}"
        time.sleep(0.05)


@pytest.mark.parametrize("agent_goes", ["lifeline closed", "parent-death signal"])
def test_a_job_takes_its_whole_process_group_down_when_its_agent_goes(agent_goes: str) -> None:
    lifeline, alive = os.pipe()
    job = subprocess.Popen(
        [sys.executable, "-c", JOB],
        env={**os.environ, LIFELINE_ENV: str(lifeline)},
        pass_fds=(lifeline,),
        start_new_session=True,  # the executor's setsid
        stdout=subprocess.PIPE,
        text=True,
    )
    os.close(lifeline)
    try:
        assert job.stdout is not None
        worker = int(job.stdout.readline())
        assert sorted(_group(job.pid)) == sorted([job.pid, worker])
        if agent_goes == "lifeline closed":
            os.close(alive)  # what the kernel does when the agent dies, SIGKILL included
        else:
            job.send_signal(PARENT_DEATH_SIGNAL)  # what the kernel sends on the agent's death
        assert job.wait(timeout=5) == -signal.SIGKILL
        _wait_gone([worker], seconds=5)
        assert _group(job.pid) == []
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
        if agent_goes != "lifeline closed":
            os.close(alive)


def test_the_kernel_signals_a_job_whose_agent_was_killed() -> None:
    agent = subprocess.Popen([sys.executable, "-c", AGENT], stdout=subprocess.PIPE, text=True)
    try:
        assert agent.stdout is not None
        job = int(agent.stdout.readline())
        assert _alive(job)
        agent.kill()
        agent.wait(timeout=10)
        _wait_gone([job], seconds=5)
    finally:
        if agent.poll() is None:
            agent.kill()


def test_a_job_started_by_hand_is_not_bound_to_anything() -> None:
    from bastion.agent.lifeline import die_with_agent

    assert die_with_agent({}) is False


@pytest.mark.slow
def test_jobs_die_within_seconds_of_a_sigkilled_agent(tmp_path: Path) -> None:
    """Not once the control plane fences them off (the lease outlasts the test's patience)."""
    with running_plane(tmp_path, lease_seconds=30) as plane:
        run = plane.admin.submit_run(
            {
                "name": "outlived",
                "project": "p",
                "cluster": "c1",
                "job": {"type": "smoke", "steps": 200, "sleep_seconds": 0.25},
            }
        )
        _wait_status(plane.admin, run.id, {"running"})
        jobs = _children(plane.agent.pid)
        assert len(jobs) == 1
        # The job leads a process group of its own: bubblewrap, the sandbox's init, the job.
        group = _group(jobs[0])
        assert sorted(group) == sorted([jobs[0], *_descendants(jobs[0])])
        plane.agent.send_signal(signal.SIGKILL)
        plane.agent.wait(timeout=10)
        try:
            _wait_gone(group, seconds=5)
            assert _group(jobs[0]) == []
        finally:
            for pid in _group(jobs[0]):
                os.kill(pid, signal.SIGKILL)
