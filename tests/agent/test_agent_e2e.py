"""The compute plane end to end: a real control plane, a real agent process, real jobs."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from bastion.client import Client, RunOut
from bastion.errors import NotAuthorized
from tests.server.test_live import BASTION, _bastion, _env, _free_port, _init, _wait_healthy


@dataclass
class Plane:
    url: str
    admin: Client
    client_home: Path
    agent_home: Path
    agent: subprocess.Popen[str]
    storage: Path
    server: subprocess.Popen[bytes]
    server_args: list[str]
    server_env: dict[str, str]

    def restart_server(self, *, down_seconds: float) -> None:
        """Stop the control plane, wait, start it again on the same port and database."""
        self.server.terminate()
        self.server.wait(timeout=30)
        time.sleep(down_seconds)
        self.server = subprocess.Popen(
            self.server_args,
            env=self.server_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_healthy(self.url)


def _spec(path: Path, **job: object) -> Path:
    spec = {"name": "smoke", "project": "p", "cluster": "c1", "job": {"type": "smoke", **job}}
    path.write_text(yaml.safe_dump(spec))
    return path


@contextlib.contextmanager
def running_plane(tmp_path: Path, *, lease_seconds: int = 30) -> Iterator[Plane]:
    """A control plane process and one agent process (cluster c1), both on loopback."""
    server_home, client_home, agent_home = (tmp_path / n for n in ("server", "client", "agent"))
    token = _init(server_home)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server_env = {**_env(server_home), "BASTION_LEASE_SECONDS": str(lease_seconds)}
    server_args = [BASTION, "server", "start", "--port", str(port)]
    server_log = (tmp_path / "server.log").open("ab")  # the control plane's log file
    server = subprocess.Popen(server_args, env=server_env, stdout=server_log, stderr=server_log)
    plane: Plane | None = None
    agent: subprocess.Popen[str] | None = None
    try:
        _wait_healthy(url)
        assert _bastion(client_home, "login", "--url", url, "--token", token).returncode == 0
        assert _bastion(client_home, "project", "create", "p").returncode == 0
        created = _bastion(client_home, "cluster", "create", "c1")
        join_token = created.stdout.splitlines()[1].strip()
        storage = tmp_path / "storage"
        incoming = tmp_path / "incoming"
        incoming.mkdir()
        agent = start_agent(agent_home, url, "c1", storage, join_token, import_root=incoming)
        with Client(url, token=token) as admin:
            wait_for_heartbeat(admin, agent, "c1")
            plane = Plane(
                url, admin, client_home, agent_home, agent, storage, server, server_args, server_env
            )
            yield plane
    finally:
        if agent is not None and agent.poll() is None:
            agent.terminate()
            agent.wait(timeout=30)
        current = plane.server if plane is not None else server
        current.terminate()
        current.wait(timeout=30)
        server_log.close()


def register_patients(plane: Plane, *, rows: int | None = None) -> None:
    """The reference patients table registered as patients@1 (target diagnosis)."""
    from bastion.data.reference import patients

    source = plane.storage.parent / "incoming" / "patients.csv"
    patients(seed=0, rows=rows).to_csv(source, index=False)
    args = ["--name", "patients", "-p", "p", "--target", "diagnosis"]
    args += ["--subject-id-column", "subject_id"]
    done = _bastion(plane.client_home, "data", "register", str(source), *args)
    assert done.returncode == 0, done.stdout + done.stderr


def start_agent(
    home: Path,
    url: str,
    cluster: str,
    storage: Path,
    join_token: str | None = None,
    *,
    import_root: Path | None = None,
) -> subprocess.Popen[str]:
    args = [
        BASTION,
        "agent",
        "start",
        "--cluster",
        cluster,
        "--control-plane",
        url,
        "--storage",
        str(storage),
        "--heartbeat-seconds",
        "0.5",
    ]
    env = _env(home)
    if join_token:  # from the environment: a command-line token shows in the process list
        env["BASTION_JOIN_TOKEN"] = join_token
    if import_root is not None:
        args += ["--import-root", str(import_root)]
    agent = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if join_token:
        cmdline = Path(f"/proc/{agent.pid}/cmdline").read_bytes()
        assert join_token.encode() not in cmdline
    return agent


def wait_for_heartbeat(admin: Client, agent: subprocess.Popen[str], cluster: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        found = {c.name: c for c in admin.list_clusters()}
        if found[cluster].last_heartbeat:
            return
        assert time.monotonic() < deadline, "agent never heartbeated"
        assert agent.poll() is None, agent.stdout.read() if agent.stdout else ""
        time.sleep(0.2)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    """One control plane and one agent shared by this module's tests (they take seconds)."""
    with running_plane(tmp_path_factory.mktemp("plane")) as started:
        yield started


def _wait_status(admin: Client, run_id: str, statuses: set[str], timeout: float = 60) -> RunOut:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = admin.get_run("p", run_id)
        if run.status in statuses:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} never reached {statuses}: {admin.get_run('p', run_id)}")


def test_smoke_run_end_to_end(plane: Plane, tmp_path: Path) -> None:
    spec = _spec(tmp_path / "smoke.yaml", steps=4)
    result = _bastion(plane.client_home, "run", "submit", str(spec), "--follow")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "step 4/4" in result.stdout and "succeeded" in result.stdout
    run_id = result.stdout.split()[2]
    run = plane.admin.get_run("p", run_id)
    assert run.status == "succeeded" and run.attempt == 1
    assert [m.step for m in plane.admin.run_metrics("p", run.id)] == [1, 2, 3, 4]
    actions = [e.action for e in plane.admin.audit_events(limit=200)]
    for action in ("cluster.join", "run.create", "run.leased", "run.status"):
        assert action in actions
    workdir = plane.storage / "runs" / run.id / "attempt-1"
    assert json.loads((workdir / "result.json").read_text())["steps"] == 4
    # The other run verbs, as a person would use them.
    listed = _bastion(plane.client_home, "run", "list", "-p", "p")
    assert listed.returncode == 0 and run_id[:8] in listed.stdout and "succeeded" in listed.stdout
    shown = _bastion(plane.client_home, "run", "show", run_id, "-p", "p")
    assert (
        shown.returncode == 0 and "succeeded" in shown.stdout and "4 metric points" in shown.stdout
    )
    logs = _bastion(plane.client_home, "run", "logs", run_id, "-p", "p")
    assert logs.stdout.splitlines()[:4] == ["step 1/4", "step 2/4", "step 3/4", "step 4/4"]
    ended = _bastion(plane.client_home, "run", "cancel", run_id, "-p", "p")
    assert ended.returncode == 2 and "already ended" in ended.stderr


def test_bad_spec_is_refused_before_queueing(plane: Plane, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "name": "x",
                "project": "p",
                "cluster": "c1",
                "job": {"type": "smoke", "steps": 0},
                "gpu": True,
            }
        )
    )
    result = _bastion(plane.client_home, "run", "submit", str(bad))
    assert result.returncode == 2
    assert "job.steps" in result.stderr and "gpu" in result.stderr
    assert all(run.name != "x" for run in plane.admin.list_runs("p"))


def _listening_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            next(handle)
            for line in handle:
                fields = line.split()
                if fields[3] == "0A":  # LISTEN
                    inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        kids = _children(frontier.pop())
        found += kids
        frontier += kids
    return found


def _job_process(agent: int) -> int:
    """The job's Python process, inside its sandbox (agent -> bwrap -> its init -> job)."""
    for pid in _descendants(agent):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"bastion.agent.job" in argv and not any(a.endswith(b"bwrap") for a in argv):
                return pid
    raise AssertionError("no job process found under the agent")


def test_agent_listens_on_no_port_and_jobs_hold_no_credential(plane: Plane, tmp_path: Path) -> None:
    run = plane.admin.submit_run(
        yaml.safe_load(_spec(tmp_path / "slow.yaml", steps=40, sleep_seconds=0.25).read_text())
    )
    _wait_status(plane.admin, run.id, {"running"})
    sockets = _socket_inodes(plane.agent.pid)
    assert sockets, "the agent should hold outbound connections"
    assert not sockets & _listening_inodes(), "the agent must not listen on any network socket"
    jobs = _children(plane.agent.pid)
    assert len(jobs) == 1
    job = _job_process(plane.agent.pid)
    environ = dict(
        item.split("=", 1)
        for item in Path(f"/proc/{job}/environ").read_text().split("\0")
        if "=" in item
    )
    # The agent's thread counts, where the agent was given any (make test gives it 1).
    threads = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
    for name in threads:
        assert environ.get(name) == os.environ.get(name), name
    assert set(environ) - set(threads) == {
        "PATH",
        "LANG",
        "HOME",
        "TMPDIR",
        "BASTION_HOME",
        "BASTION_RELAY",
        "BASTION_AGENT_LIFELINE",
        "BASTION_FANOUT",
        "PYTHONDONTWRITEBYTECODE",
        "CUDA_VISIBLE_DEVICES",
        "CUDA_DEVICE_ORDER",
        "PWD",  # set by bubblewrap
    }, sorted(environ)
    assert environ["CUDA_VISIBLE_DEVICES"] == ""  # given no GPU, CUDA may use none
    # Its heartbeat advertised this host: CPUs, memory, and no GPU (CI has none).
    capacity = plane.admin.list_clusters()[0].capacity
    assert capacity is not None and capacity.cpus >= 1 and capacity.gpus == []
    agent_token = json.loads((plane.agent_home / "agent-c1.json").read_text())["token"]
    assert agent_token not in json.dumps(environ)
    # The relay, seen from inside the job's sandbox, forwards reports on its own run only.
    relay = f"/proc/{job}/root{environ['BASTION_RELAY']}"
    other = plane.admin.submit_run({**run.spec, "name": "other"})
    with Client("http://relay", transport=httpx.HTTPTransport(uds=relay)) as through:
        through.report_logs("p", run.id, ["mine"])
        with pytest.raises(NotAuthorized, match="relay forwards only"):
            through.report_logs("p", other.id, ["not mine"])
        with pytest.raises(NotAuthorized, match="relay forwards only"):
            through.list_runs("p")
        with pytest.raises(NotAuthorized, match="relay forwards only"):
            through.request("POST", f"/api/v1/projects/p/runs/{run.id}/cancel")
    assert "mine" in [line.line for line in plane.admin.run_logs("p", run.id)]
    plane.admin.cancel_run("p", other.id)
    # Cancelling the running run stops its process at the next heartbeat.
    plane.admin.cancel_run("p", run.id)
    deadline = time.monotonic() + 30
    while (
        Path(f"/proc/{jobs[0]}").exists()
        and "Z" not in Path(f"/proc/{jobs[0]}/stat").read_text().split()[2]
    ):
        assert time.monotonic() < deadline, "the cancelled job is still running"
        time.sleep(0.2)
    assert plane.admin.get_run("p", run.id).status == "cancelled"


def test_failed_job_reports_its_reason(plane: Plane, tmp_path: Path) -> None:
    run = plane.admin.submit_run(
        yaml.safe_load(_spec(tmp_path / "fail.yaml", steps=5, fail_at_step=3).read_text())
    )
    final = _wait_status(plane.admin, run.id, {"failed", "succeeded"})
    assert final.status == "failed" and "failed at step 3" in final.status_reason
    logs = [line.line for line in plane.admin.run_logs("p", run.id)]
    assert logs[:2] == ["step 1/5", "step 2/5"]


def test_health_of_the_join_token(plane: Plane) -> None:
    """The join token was consumed: a second join with it is refused."""
    response = httpx.post(
        f"{plane.url}/api/v1/agents/join",
        json={
            "cluster": "c1",
            "join_token": "bstjoin_" + "0" * 32 + "_x",
            "signing_public_key": "k",
            "hybrid_public_keyset": "h",
        },
    )
    assert response.status_code == 401


def test_agent_over_https_with_a_private_ca(tmp_path: Path) -> None:
    from tests.server.test_live import _certificates

    ca, cert, key = _certificates(tmp_path / "pki")
    server_home, client_home = tmp_path / "server", tmp_path / "client"
    token = _init(server_home)
    port = _free_port()
    url = f"https://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            BASTION,
            "server",
            "start",
            "--port",
            str(port),
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
        ],
        env=_env(server_home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while _bastion(
            client_home, "login", "--url", url, "--token", token, "--ca-cert", str(ca)
        ).returncode:
            assert time.monotonic() < deadline, "the TLS control plane did not come up"
            time.sleep(0.3)
        join_token = (
            _bastion(client_home, "cluster", "create", "tls1").stdout.splitlines()[1].strip()
        )
        untrusting = _bastion(
            tmp_path / "agent-a",
            "agent",
            "start",
            "--cluster",
            "tls1",
            "--control-plane",
            url,
            "--join-token",
            join_token,
            "--storage",
            str(tmp_path / "sa"),
        )
        assert untrusting.returncode == 2 and "--ca-cert" in untrusting.stderr
        token_file = tmp_path / "join-token"
        token_file.write_text(join_token + "\n")
        token_file.chmod(0o600)
        agent = subprocess.Popen(
            [
                BASTION,
                "agent",
                "start",
                "--cluster",
                "tls1",
                "--control-plane",
                url,
                "--join-token-file",
                str(token_file),
                "--storage",
                str(tmp_path / "sb"),
                "--ca-cert",
                str(ca),
                "--heartbeat-seconds",
                "0.5",
            ],
            env=_env(tmp_path / "agent-b"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            with Client(url, token=token, verify=str(ca)) as admin:
                wait_for_heartbeat(admin, agent, "tls1")
                run = (
                    admin.submit_run(
                        {
                            "name": "tls",
                            "project": "p",
                            "cluster": "tls1",
                            "job": {"type": "smoke", "steps": 1},
                        }
                    )
                    if admin.create_project("p")
                    else None
                )
                assert run is not None
                try:
                    _wait_status(admin, run.id, {"succeeded"})
                except AssertionError:
                    agent.terminate()
                    raise AssertionError(agent.communicate(timeout=30)[0][-3000:]) from None
        finally:
            if agent.poll() is None:
                agent.terminate()
                agent.wait(timeout=30)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_resource_limits_from_the_spec_apply_and_a_crash_is_reported(plane: Plane) -> None:
    spec = {
        "name": "tiny",
        "project": "p",
        "cluster": "c1",
        "job": {"type": "smoke", "steps": 2, "allocate_mb": 1024},
        "resources": {"memory_mb": 256},
    }
    run = plane.admin.submit_run(spec)
    final = _wait_status(plane.admin, run.id, {"failed", "succeeded"})
    assert final.status == "failed"
    assert any(
        why in final.status_reason for why in ("before reporting", "killed by", "out of memory")
    ), final.status_reason
    job_log = (plane.storage / "runs" / run.id / "attempt-1" / "job.log").read_text()
    assert "MemoryError" in job_log
