"""Hostile jobs in the sandbox: each attack is refused or contained, and the host is unchanged.

Each test starts a job through the local executor exactly as the agent does (bubblewrap,
limits, process cap, relay), with Python code that attacks from inside, and checks the
outcome from outside: the secret was not read, the connection was not made, the file was
not written, nothing is left running. The agent's own files (a home with ``master.key``,
a storage root with another run's decrypted inputs) lie where the real ones would.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bastion.agent.executors.base import JobRequest
from bastion.agent.executors.local import LocalJob
from bastion.agent.relay import RelayTarget
from bastion.errors import ConfigurationError
from bastion.security.sandbox import Limits, Mounts, ProcessCap, Sandbox

SECRET = "ultra-secret-master-key-material"
CANARY = "canary-row-of-another-run"


@dataclass
class Host:
    home: Path
    storage: Path
    workdir: Path
    other_inputs: Path
    sandbox: Sandbox


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    private = tmp_path_factory.mktemp("private")
    try:
        return Sandbox.detect(private=(private,))
    except ConfigurationError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the sandbox must work in CI: {exc}")
        pytest.skip(str(exc))


@pytest.fixture
def host(tmp_path: Path, sandbox: Sandbox) -> Host:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "master.key").write_text(SECRET)
    (home / "keyring.json").write_text(json.dumps({"secret": SECRET}))
    storage = tmp_path / "storage"
    workdir = storage / "runs" / "r1" / "attempt-1"
    workdir.mkdir(parents=True, mode=0o700)
    other = storage / "runs" / "r2" / "attempt-1" / "inputs" / "dataset"
    other.mkdir(parents=True, mode=0o700)
    (other / "data.csv").write_text(f"name\n{CANARY}\n")
    return Host(home, storage, workdir, other, sandbox)


def _run(
    host: Host,
    code: str,
    *,
    limits: Limits | None = None,
    timeout: float = 120,
    sandboxed: bool = True,
) -> tuple[int, str, LocalJob]:
    """Run ``code`` as the job; its exit code, its output, and the handle."""
    script = host.workdir / "attack.py"
    script.write_text(textwrap.dedent(code))
    request = JobRequest(
        run_id="r1",
        attempt=1,
        workdir=host.workdir,
        environment={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(host.workdir)},
        timeout_seconds=int(timeout),
        limits=limits or Limits(memory_mb=2048, processes=64),
        relay=RelayTarget(
            url="http://127.0.0.1:9", verify=True, token="t", project="p", run_id="r1"
        ),
        sandbox=host.sandbox if sandboxed else None,
        command=(sys.executable, "-I", str(script)),
    )
    job = LocalJob(request)
    deadline = time.monotonic() + timeout
    while (code_ := job.poll()) is None:
        if time.monotonic() > deadline:
            job.kill()
            code_ = -9
            break
        time.sleep(0.05)
    return code_, (host.workdir / "job.log").read_text(errors="replace"), job


def test_the_agents_keys_are_not_there_by_path_or_by_walking_up(host: Host) -> None:
    code, out, _ = _run(
        host,
        f"""
        import os, stat, sys
        found = []
        for path in ({str(host.home / "master.key")!r}, {str(host.home / "keyring.json")!r}):
            try:
                found.append(open(path).read())
            except OSError as exc:
                print("refused", path, type(exc).__name__)
        # Walk up from the working directory to /, and read every regular file the job can
        # see (the system and the Python environment aside: read-only, and large).
        skip = {"/proc", "/dev", "/sys", "/usr", sys.prefix, sys.base_prefix}
        folder, seen = os.getcwd(), 0
        for root, dirs, files in os.walk("/"):
            dirs[:] = [d for d in dirs if os.path.join(root, d) not in skip]
            for name in files:
                path = os.path.join(root, name)
                try:
                    if stat.S_ISREG(os.lstat(path).st_mode):
                        seen += 1
                        found.append(open(path, errors="replace").read(1 << 16))
                except OSError:
                    pass
        print("files", seen)
        # (split, so that this script, which the walk reads too, does not hold them whole)
        secret, canary = {SECRET[:6]!r} + {SECRET[6:]!r}, {CANARY[:6]!r} + {CANARY[6:]!r}
        leaked = any(secret in text or canary in text for text in found)
        print("LEAK" if leaked else "clean")
        """,
    )
    assert code == 0, out
    assert "clean" in out and "LEAK" not in out, out
    assert out.count("refused") == 2, out


def test_the_walk_does_find_the_secret_without_the_sandbox(host: Host) -> None:
    """The attack above is real: unsandboxed, the same job reads the key."""
    code, out, _ = _run(
        host,
        f"print('LEAK' if {SECRET!r} in open({str(host.home / 'master.key')!r}).read() else 'no')",
        sandboxed=False,
    )
    assert code == 0 and "LEAK" in out, out


def test_another_runs_inputs_are_not_there(host: Host) -> None:
    code, out, _ = _run(
        host,
        f"""
        import os
        print("exists" if os.path.exists({str(host.other_inputs / "data.csv")!r}) else "absent")
        print(sorted(os.listdir({str(host.storage / "runs")!r})))
        """,
    )
    assert code == 0, out
    assert "absent" in out and "['r1']" in out, out


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP server on the host's loopback (a stand-in control plane) that counts connections."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted: list[object] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                accepted.append(server.accept())

    threading.Thread(target=accept, daemon=True).start()
    yield port
    server.close()
    assert not accepted, "the sandboxed job reached the host's loopback"


@pytest.mark.parametrize("target", ["control-plane", "postgres", "redis", "public"])
def test_no_network_at_all(host: Host, listener: int, target: str) -> None:
    address = {
        "control-plane": ("127.0.0.1", listener),
        "postgres": ("127.0.0.1", 5432),
        "redis": ("127.0.0.1", 6379),
        "public": ("1.1.1.1", 443),
    }[target]
    code, out, _ = _run(
        host,
        f"""
        import socket
        try:
            socket.create_connection({address!r}, timeout=3).close()
            print("CONNECTED")
        except OSError as exc:
            print("refused", type(exc).__name__, exc)
        """,
    )
    assert code == 0, out
    assert "CONNECTED" not in out and "refused" in out, out


def test_writes_outside_its_folder_do_not_reach_the_host(host: Host) -> None:
    targets = [
        host.home / "master.key",
        host.storage / "runs" / "escape.txt",
        host.workdir.parent / "escape.txt",
        Path(sys.prefix) / "escape.txt",
        Path(__file__).resolve().parents[2] / "src" / "bastion" / "escape.py",
        Path("/tmp") / f"escape-{os.getpid()}.txt",
    ]
    code, out, _ = _run(
        host,
        f"""
        import os
        for path in {[str(t) for t in targets]!r}:
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as handle:
                    handle.write("written from the sandbox")
                print("wrote", path)
            except OSError as exc:
                print("refused", path, type(exc).__name__)
        open("inside.txt", "w").write("its own folder is writable")
        """,
    )
    assert code == 0, out
    assert (host.home / "master.key").read_text() == SECRET
    for target in targets[1:]:
        assert not target.exists(), f"{target} was written from the sandbox\n{out}"
    assert (host.workdir / "inside.txt").read_text() == "its own folder is writable"


def test_a_fork_bomb_meets_the_process_cap(host: Host) -> None:
    _need_a_process_cap()
    started = time.monotonic()
    _, out, job = _run(
        host,
        """
        import os, time
        children = 0
        for _ in range(500):
            try:
                if os.fork() == 0:
                    time.sleep(30)
                    os._exit(0)
                children += 1
            except OSError as exc:
                print("fork refused:", type(exc).__name__)
                break
        print("children", children)
        """,
        limits=Limits(memory_mb=1024, processes=32),
    )
    assert time.monotonic() - started < 60, "the job's first process exiting ends its children"
    assert "fork refused" in out, out
    children = int(out.split("children", 1)[1].split()[0])
    assert children < 32, out
    assert "process limit (32) refused" in (job.limit_reached() or "")


def test_a_real_fork_bomb_is_contained_and_leaves_nothing(host: Host) -> None:
    _need_a_process_cap()
    marker = str(host.workdir / "attack.py")  # in every bomb process's command line
    _run(
        host,
        """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """,
        limits=Limits(memory_mb=1024, processes=48),
        timeout=4,
    )
    assert not _processes_with(marker)


def test_memory_past_the_limit_is_refused(host: Host) -> None:
    code, out, _ = _run(
        host,
        """
        ballast = bytearray(900 << 20)
        print("ALLOCATED", len(ballast))
        """,
        limits=Limits(memory_mb=512, processes=64),
    )
    assert code != 0 and "ALLOCATED" not in out and "MemoryError" in out, out


def test_no_process_outlives_the_job(host: Host) -> None:
    marker = f"left-behind-{os.getpid()}"
    code, out, _ = _run(
        host,
        f"""
        import os, subprocess, sys
        # a daemon: double fork, own session, sleeping long after the job has ended
        subprocess.Popen(
            [sys.executable, "-c", "import time\\nwhile True: time.sleep(1)", {marker!r}],
            start_new_session=True, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        print("daemon started")
        """,
    )
    assert code == 0 and "daemon started" in out, out
    deadline = time.monotonic() + 10
    while _processes_with(marker):
        assert time.monotonic() < deadline, "a process the job started outlived it"
        time.sleep(0.1)


def test_the_host_processes_are_invisible(host: Host) -> None:
    code, out, _ = _run(
        host,
        f"""
        import os, signal
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
        print("pids", len(pids))
        try:
            os.kill({os.getpid()}, signal.SIGKILL)
            print("KILLED THE HOST PROCESS")
        except OSError as exc:
            print("refused", type(exc).__name__)
        """,
    )
    assert code == 0, out
    assert int(out.split("pids", 1)[1].split()[0]) <= 3, out
    assert "refused" in out


def _need_a_process_cap() -> None:
    cap = ProcessCap.create(f"bastion-probe-{os.getpid()}", 8)
    if cap is not None:
        cap.remove()
    elif os.getuid() == 0:
        reason = "no pids cgroup here, and RLIMIT_NPROC does not bind root"
        if os.environ.get("CI"):
            pytest.fail(f"the process cap must be testable in CI: {reason}")
        pytest.skip(reason)


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def test_a_private_folder_inside_the_python_environment_is_refused(tmp_path: Path) -> None:
    """A home that the bound Python environment contains would be visible in every sandbox."""
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    inside = Path(sys.prefix) / "lib"
    with pytest.raises(ConfigurationError, match="contains"):
        Sandbox.detect(private=(inside,))


def test_the_sandbox_command_binds_only_what_it_is_given(host: Host) -> None:
    argv = host.sandbox.command(["true"], Mounts(host.workdir, readonly=(host.storage / "x",)))
    binds = [argv[i + 1] for i, arg in enumerate(argv) if arg in ("--bind", "--ro-bind")]
    assert str(host.workdir) in binds and str(host.storage / "x") in binds
    assert not any(Path(b).is_relative_to(host.home) for b in binds)
    assert "--unshare-all" in argv and "--share-net" not in argv
    assert "--die-with-parent" in argv
    assert argv[argv.index("--remount-ro") + 1] == "/"  # the root bwrap built, read-only
    served = host.sandbox.command(["true"], Mounts(host.workdir, network=True))
    assert "--share-net" in served


def test_bwrap_missing_is_a_clear_refusal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigurationError, match=r"bubblewrap.*--no-sandbox"):
        Sandbox.detect(private=())


def test_a_sandbox_that_cannot_start_is_refused(host: Host, tmp_path: Path) -> None:
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    broken = Sandbox(str(fake), environment=host.sandbox.environment, version="fake")
    with pytest.raises(ConfigurationError, match="No permissions to create new namespace"):
        broken.probe()
    assert subprocess.run([str(fake)], check=False, capture_output=True).returncode == 1


def test_an_agent_without_bubblewrap_refuses_to_start(tmp_path: Path) -> None:
    """Fail closed: no sandbox, no agent, unless the operator says --no-sandbox."""
    from tests.server.test_live import BASTION, _env

    env = {**_env(tmp_path / "home"), "PATH": str(tmp_path / "empty")}
    started = subprocess.run(
        [
            BASTION,
            "agent",
            "start",
            "--cluster",
            "c1",
            "--control-plane",
            "http://127.0.0.1:9",
            "--storage",
            str(tmp_path / "storage"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert started.returncode == 2, started.stdout + started.stderr
    assert "bubblewrap (bwrap) is not installed" in started.stderr
    assert "--no-sandbox" in started.stderr
