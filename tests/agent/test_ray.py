"""The Ray executor and fan-out against a real Ray head with token authentication.

Ray advertises the host's primary address even when told 127.0.0.1, so the head, the
control plane, the agent and the client all run in a private network namespace whose
only interface is loopback: nothing leaves it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from bastion.data.reference import patients

pytestmark = pytest.mark.ray

BIN = Path(sys.executable).parent
RAY_PORT = 6399
CP_PORT = 8600


@dataclass
class Namespace:
    name: str
    ray_token: str
    tmp: Path

    def env(self, home: Path, *, ray_token: str | None = None) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("BASTION_", "RAY_"))}
        return {
            **base,
            "BASTION_HOME": str(home),
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": ray_token or self.ray_token,
        }

    def run(
        self, home: Path, *args: str, ray_token: str | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *args],
            env=self.env(home, ray_token=ray_token),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, home: Path, *args: str) -> subprocess.Popen[str]:
        """Start a long-running process; its output goes to ``home``/output.log (a pipe
        nobody reads fills up and stalls the process once it has logged 64 KiB)."""
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        with (home / "output.log").open("ab") as output:
            return subprocess.Popen(
                ["ip", "netns", "exec", self.name, *args],
                env=self.env(home),
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
            )


@pytest.fixture(scope="module")
def namespace() -> Iterator[Namespace]:
    if shutil.which("ip") is None or importlib_missing("ray"):
        reason = "the Ray tests need iproute2 and the 'ray' extra"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"bastion-{uuid.uuid4().hex[:8]}"
    created = subprocess.run(
        ["ip", "netns", "add", name], capture_output=True, text=True, check=False
    )
    if created.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot create a network namespace: {created.stderr}")
        pytest.skip(f"cannot create a network namespace: {created.stderr}")
    tmp = Path(tempfile.mkdtemp(prefix="bray", dir="/tmp"))  # short: Ray's socket paths are limited
    space = Namespace(name, secrets.token_hex(32), tmp)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        head = space.run(
            tmp / "ray-home",
            str(BIN / "ray"),
            "start",
            "--head",
            f"--port={RAY_PORT}",
            "--num-cpus=2",
            "--num-gpus=1",  # declared, not real: placement on Ray's GPUs, then CUDA finds none
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={tmp / 'r'}",
        )
        assert head.returncode == 0, head.stdout + head.stderr
        yield space
    finally:
        space.run(tmp / "ray-home", str(BIN / "ray"), "stop", "--force")
        subprocess.run(["ip", "netns", "del", name], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def importlib_missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


def test_ray_refuses_a_wrong_token_and_fans_out_with_the_right_one(namespace: Namespace) -> None:
    probe = (
        "from bastion.agent.fanout import RayFanOut; "
        f"print(RayFanOut(address='127.0.0.1:{RAY_PORT}').map(abs, [-1, -2, 3]))"
    )
    ok = namespace.run(namespace.tmp / "h1", sys.executable, "-c", probe)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert ok.stdout.strip().splitlines()[-1] == "[1, 2, 3]"
    bad = namespace.run(
        namespace.tmp / "h2", sys.executable, "-c", probe, ray_token="0" * 64, timeout=120
    )
    assert bad.returncode != 0


# Its own limit, above the sum of its waits: a Ray head, an agent and three runs, which on a
# loaded two-core host take several times what they take alone.
@pytest.mark.timeout(1500)
def test_runs_through_the_ray_executor(namespace: Namespace, tmp_path: Path) -> None:
    server_home, client_home, agent_home = (tmp_path / n for n in ("server", "client", "agent"))
    bastion = str(BIN / "bastion")
    init = namespace.run(server_home, bastion, "server", "init")
    assert init.returncode == 0, init.stderr
    lines = init.stdout.splitlines()
    token = next(lines[i + 1] for i, line in enumerate(lines) if "shown once" in line).strip()
    server = namespace.start(server_home, bastion, "server", "start", "--port", str(CP_PORT))
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    patients(seed=0, rows=400).to_csv(incoming / "patients.csv", index=False)
    agent: subprocess.Popen[str] | None = None
    url = f"http://127.0.0.1:{CP_PORT}"
    try:
        deadline = time.monotonic() + 60
        while namespace.run(
            client_home, bastion, "login", "--url", url, "--token", token
        ).returncode:
            assert time.monotonic() < deadline, "control plane did not come up"
            time.sleep(0.5)
        assert namespace.run(client_home, bastion, "project", "create", "p").returncode == 0
        created = namespace.run(client_home, bastion, "cluster", "create", "ray1")
        join_token = created.stdout.splitlines()[1].strip()
        agent = namespace.start(
            agent_home,
            bastion,
            "agent",
            "start",
            "--cluster",
            "ray1",
            "--control-plane",
            url,
            "--join-token",
            join_token,
            "--storage",
            str(tmp_path / "storage"),
            "--import-root",
            str(incoming),
            "--executor",
            "ray",
            "--ray-address",
            f"127.0.0.1:{RAY_PORT}",
            "--heartbeat-seconds",
            "0.5",
        )
        spec = tmp_path / "ray.yaml"
        spec.write_text(
            yaml.safe_dump(
                {
                    "name": "on-ray",
                    "project": "p",
                    "cluster": "ray1",
                    "job": {"type": "smoke", "steps": 3},
                }
            )
        )
        result = namespace.run(client_home, bastion, "run", "submit", str(spec), "--follow")
        assert result.returncode == 0, (
            result.stdout
            + result.stderr
            + ((agent_home / "output.log").read_text() if agent.poll() is not None else "")
        )
        assert "step 3/3" in result.stdout and "succeeded" in result.stdout
        _register_patients(namespace, client_home, tmp_path)
        _a_killed_private_worker_restarts_the_group_on_ray(namespace, client_home, tmp_path)
        _a_gpu_run_is_placed_on_rays_gpu(namespace, client_home, tmp_path)
    finally:
        for process in (agent, server):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)


def _register_patients(namespace: Namespace, home: Path, tmp_path: Path) -> None:
    bastion = str(BIN / "bastion")
    registered = namespace.run(
        home,
        bastion,
        "data",
        "register",
        str(tmp_path / "incoming" / "patients.csv"),
        "--name",
        "patients",
        "-p",
        "p",
        "--target",
        "diagnosis",
        "--subject-id-column",
        "subject_id",
    )
    assert registered.returncode == 0, registered.stdout + registered.stderr


def _patients_spec(
    tmp_path: Path, name: str, *, train: dict[str, object], resources: dict[str, object]
) -> Path:
    """A training spec on the patients table for cluster ray1, written to a file."""
    spec = tmp_path / f"{name}.yaml"
    body = {
        "name": name,
        "project": "p",
        "cluster": "ray1",
        "dataset": "patients@1",
        "model": {"builtin": "mlp", "hidden": [16]},
        "train": train,
        "resources": resources,
    }
    spec.write_text(yaml.safe_dump(body))
    return spec


def _rank_processes(rank: int) -> list[int]:
    """Host pids of the job processes running ``rank`` of a Ray Train group."""
    marker = f"BASTION_RANK={rank}".encode() + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
            environment = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if b"bastion.agent.job" in command and marker in environment:
            found.append(int(entry))
    return found


def _a_killed_private_worker_restarts_the_group_on_ray(
    namespace: Namespace, home: Path, tmp_path: Path
) -> None:
    """``resources.workers: 2`` with DP-SGD under Ray Train: two Ray Train workers of one CPU
    each (all the head has), each running its rank's process in a sandbox; rank 0 reports.
    Once rank 0 has kept a checkpoint, rank 1's process is SIGKILLed; Ray Train starts the
    group again, rank 0 resumes from that checkpoint and the privacy accountant with it."""
    bastion = str(BIN / "bastion")
    privacy = {"target_epsilon": 3.0, "delta": 1e-5, "max_grad_norm": 1.0}
    spec = _patients_spec(
        tmp_path,
        "ray-private",
        train={"epochs": 6, "batch_size": 32, "lr": 0.5, "privacy": privacy},
        resources={"workers": 2, "cpus_per_worker": 1},
    )
    earlier = set((tmp_path / "storage").rglob("parallel/resume"))  # other runs' folders
    follow = namespace.start(home, bastion, "run", "submit", str(spec), "--follow")
    try:
        # No fixed guess at how long a loaded host takes to start the group: the run is
        # followed until it keeps a checkpoint; only a run that ends first, or one that
        # shows no checkpoint in 700 s (the test's own limit is 1500 s), fails, with what
        # the run, the agent and Ray had to say.
        deadline = time.monotonic() + 700
        while not set((tmp_path / "storage").rglob("parallel/resume")) - earlier:
            assert follow.poll() is None, (home / "output.log").read_text()[-3000:]
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint was kept in 700 s\n" + _diagnosis(namespace, home))
            time.sleep(0.05)
        killed = _rank_processes(1)
        assert killed, "rank 1's process was not found"
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        assert follow.wait(timeout=420) == 0, (home / "output.log").read_text()[-3000:]
    finally:
        if follow.poll() is None:
            follow.kill()
    out = (home / "output.log").read_text()
    assert "2 workers train data-parallel on Ray Train, 1 CPU thread each" in out, out[-3000:]
    assert "the training group lost a worker" in out, out[-3000:]
    assert "resuming the group from its newest checkpoint" in out, out[-3000:]
    assert "epsilon" in out and "succeeded" in out, out[-3000:]


def _diagnosis(namespace: Namespace, home: Path) -> str:
    """The followed run's output, the agent's last lines and Ray's resources, for a failure."""
    agent = home.parent / "agent" / "output.log"
    status = namespace.run(namespace.tmp / "ray-home", str(BIN / "ray"), "status", timeout=60)
    return "\n".join(
        (
            "--- the run:",
            (home / "output.log").read_text()[-3000:],
            "--- the agent:",
            agent.read_text()[-3000:] if agent.is_file() else "(no log)",
            "--- ray status:",
            (status.stdout + status.stderr)[-2000:],
        )
    )


def _a_gpu_run_is_placed_on_rays_gpu(namespace: Namespace, home: Path, tmp_path: Path) -> None:
    """The head declares one GPU: the agent advertises it, a run asking for it is leased and
    started by Ray on it (the job is told which), and, as this host has no CUDA, fails in
    one line naming what it did not find."""
    bastion = str(BIN / "bastion")
    listed = namespace.run(home, bastion, "cluster", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    (cluster,) = [c for c in json.loads(listed.stdout) if c["name"] == "ray1"]
    assert [gpu["name"] for gpu in cluster["capacity"]["gpus"]] == ["GPU (Ray)"]
    spec = _patients_spec(tmp_path, "ray-gpu", train={"epochs": 1}, resources={"gpus": 1})
    result = namespace.run(home, bastion, "run", "submit", str(spec), "--follow")
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "GPUs given to this job: CUDA_VISIBLE_DEVICES=0" in out, out
    assert "the run asks for 1 GPU (resources.gpus) but the job finds 0" in out, out
