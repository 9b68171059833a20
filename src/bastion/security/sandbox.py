"""The job sandbox: every job runs under bubblewrap (``bwrap``), in namespaces of its own.

What a sandboxed job sees, step by step as :meth:`Sandbox.command` builds it:

1. **A fresh root.** The system (``/usr`` and its links) and the Python environment the agent
   runs from, read-only; a few files of ``/etc`` (certificates, the loader cache); nothing
   else of the host. ``BASTION_HOME``, the storage root, other runs and the home directory do
   not exist in it.
2. **Its own folder read-write**, at the same path as outside (its attempt directory), and
   the read-only folders the agent names (a code package, the operator's inputs).
3. **A private /tmp and /dev/shm**, a minimal ``/dev`` and the ``/proc`` of its own PID
   namespace: it cannot see or signal the host's processes, and when its first process ends
   every process it started ends too.
4. **No network** (a fresh network namespace with only its own loopback) unless the agent
   asks for the host's network (an inference server's listening port). The job's one channel
   is the agent's relay socket, bound at :data:`RELAY_DIR`.
   **No GPU** unless the agent gave it some: then the device nodes of those GPUs only (and
   the driver's control nodes), where the host has them (:func:`gpu_device_nodes`); the
   agent also sets ``CUDA_VISIBLE_DEVICES`` to them ("" for a job given none).
5. **No capabilities**, a session of its own, and death with the process that started it.

Resource limits (:class:`Limits`) are set on the sandbox's first process and inherited:
address space (not for a GPU job: the CUDA driver reserves far more address space than
memory), CPU time, file size; the number of processes is capped by a pids cgroup
(:class:`ProcessCap`) where the agent may create one, else by ``RLIMIT_NPROC``.

It does not isolate against kernel exploits or hardware side channels: the sandbox is
namespaces on a shared kernel, not a virtual machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from bastion.errors import ConfigurationError

__all__ = [
    "RELAY_DIR",
    "RELAY_SOCKET",
    "Isolation",
    "Limits",
    "Mounts",
    "ProcessCap",
    "Sandbox",
    "gpu_device_nodes",
    "python_environment",
]

#: Where the agent's relay socket appears inside the sandbox.
RELAY_DIR = Path("/run/bastion")
RELAY_SOCKET = RELAY_DIR / "relay.sock"

#: The system, read-only (a merged-/usr system has links in place of most).
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: What of /etc a Python job needs: certificates, the loader's cache, names, time zone.
_ETC = (
    "/etc/alternatives",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/group",
    "/etc/hosts",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
    "/etc/os-release",
    "/etc/passwd",
    "/etc/pki",
    "/etc/ssl",
)


class Isolation(StrEnum):
    """How the agent's jobs are isolated: recorded on the cluster, every run and model."""

    BUBBLEWRAP = "bubblewrap"
    NONE = "none"


@dataclass(frozen=True)
class Limits:
    """What one job may use; the agent's reaper enforces the wall time."""

    memory_mb: int
    cpu_seconds: int | None = None
    processes: int = 512
    file_mb: int = 64 << 10
    #: Cap the address space at ``memory_mb``; off for a GPU job, whose CUDA driver maps
    #: tens of GiB of address space it never touches (the limit would make CUDA fail).
    address_space: bool = True

    def apply(self, *, cap_processes: bool) -> None:
        """In the job's first process, before it runs anything (inherited by its children).

        ``RLIMIT_NPROC`` counts every process of the user, and the kernel ignores it for
        root, so it is only the process cap where no cgroup holds the job."""
        if self.address_space:
            memory = self.memory_mb << 20
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        if self.cpu_seconds is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (self.cpu_seconds, self.cpu_seconds))
        size = self.file_mb << 20
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        if cap_processes:
            resource.setrlimit(resource.RLIMIT_NPROC, (self.processes, self.processes))


@dataclass(frozen=True)
class Mounts:
    """One job's view: its folder read-write, other folders read-only, its relay."""

    workdir: Path
    readonly: tuple[Path, ...] = ()
    relay_dir: Path | None = None
    network: bool = False
    #: The host indices of the GPUs the job was given (none: it sees no GPU device).
    gpus: tuple[int, ...] = ()


#: The NVIDIA driver's shared nodes, which a job given any GPU needs besides its GPUs' own.
_NVIDIA_CONTROL = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")


def gpu_device_nodes(gpus: Sequence[int]) -> list[str]:
    """The device nodes a job given ``gpus`` (host indices) sees: none for a job given none;
    else the driver's control nodes and ``/dev/nvidiaN`` of each of its GPUs, not another's."""
    if not gpus:
        return []
    return [*_NVIDIA_CONTROL, *(f"/dev/nvidia{index}" for index in sorted(set(gpus)))]


def _minimal(paths: Iterable[Path]) -> tuple[Path, ...]:
    """The paths, without those inside another one of them."""
    chosen: list[Path] = []
    for path in sorted(set(paths), key=lambda p: len(p.parts)):
        if not any(path.is_relative_to(kept) for kept in chosen):
            chosen.append(path)
    return tuple(sorted(chosen))


def python_environment(*, private: Sequence[Path]) -> tuple[Path, ...]:
    """The folders this Python needs (prefixes and import path), to bind read-only.

    Refuses an environment that holds one of the ``private`` folders (``BASTION_HOME``, the
    storage root, the home directory): binding it would show the job what it must not see.
    """
    # Asked of a fresh interpreter started as jobs are (no PYTHONPATH, no working directory
    # on the path): this process's own path may hold a test runner's or a user's folders.
    probe = (
        "import json, sys; print(json.dumps([sys.prefix, sys.base_prefix, sys.exec_prefix, "
        "sys.base_exec_prefix, *sys.path]))"
    )
    done = subprocess.run(  # noqa: S603 - this interpreter, fixed code
        [sys.executable, "-I", "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
    )
    listed: list[str] = json.loads(done.stdout)
    candidates = {Path(p) for p in listed if p and os.path.isabs(p) and os.path.isdir(p)}
    candidates.add(Path(os.path.realpath(sys.executable)).parent)
    system = tuple(Path(p) for p in _SYSTEM)
    paths = _minimal(
        Path(os.path.realpath(p))
        for p in candidates
        if not any(Path(os.path.realpath(p)).is_relative_to(s) for s in system)
    )
    for folder in paths:
        for secret in private:
            real = Path(os.path.realpath(secret))
            if real.is_relative_to(folder):
                raise ConfigurationError(
                    f"the Python environment's folder {folder} contains {secret}: a sandboxed "
                    "job would see it; install Bastion outside the Bastion home, the storage "
                    "root and the home directory"
                )
    return paths


class Sandbox:
    """bubblewrap, found and checked on this host, and the view every job gets."""

    def __init__(self, bwrap: str, *, environment: tuple[Path, ...], version: str) -> None:
        self.bwrap = bwrap
        self.environment = environment
        self.version = version

    @classmethod
    def detect(cls, *, private: Sequence[Path]) -> Sandbox:
        """bubblewrap on this host, probed by starting Python in it; refused with the reason."""
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise ConfigurationError(
                "bubblewrap (bwrap) is not installed: jobs cannot be sandboxed; install it "
                "('apt-get install bubblewrap', 'dnf install bubblewrap') or start the agent "
                "with --no-sandbox to run jobs unisolated (every run and model is marked so)"
            )
        done = subprocess.run(  # noqa: S603 - the bwrap found on PATH
            [bwrap, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
        sandbox = cls(
            bwrap,
            environment=python_environment(private=private),
            version=done.stdout.strip() or "bubblewrap",
        )
        sandbox.probe()
        return sandbox

    def probe(self) -> None:
        """Start Python in an empty sandbox; refuse with bubblewrap's own reason if it fails
        (no user namespaces, a seccomp policy, a missing library)."""
        with tempfile.TemporaryDirectory(prefix="bastion-probe-") as folder:
            workdir = Path(folder)
            done = subprocess.run(  # noqa: S603 - fixed interpreter, fixed code
                self.command(
                    [sys.executable, "-I", "-c", "import socket, bastion"], Mounts(workdir)
                ),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
            )
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            raise ConfigurationError(
                f"bubblewrap cannot start a job on this host ({reason}); allow unprivileged "
                "user namespaces (sysctl kernel.unprivileged_userns_clone=1) or start the "
                "agent with --no-sandbox to run jobs unisolated (every run and model is "
                "marked so)"
            )

    def command(self, argv: Sequence[str], mounts: Mounts) -> list[str]:
        """``argv`` wrapped in bubblewrap, with the view the module docstring describes."""
        args = [self.bwrap, "--unshare-all", "--die-with-parent", "--cap-drop", "ALL"]
        # (3) first: a private /tmp, which the folders bound below may lie under
        private_tmp = ["--tmpfs", "/tmp", "--tmpfs", "/dev/shm"]  # noqa: S108 - fresh, its own
        args += ["--proc", "/proc", "--dev", "/dev", *private_tmp]
        # (1) a fresh root: the system and the Python environment, read-only
        for entry in _SYSTEM:
            if os.path.islink(entry):
                args += ["--symlink", os.readlink(entry), entry]
            elif os.path.isdir(entry):
                args += ["--ro-bind", entry, entry]
        for entry in _ETC:
            args += ["--ro-bind-try", entry, entry]
        for folder in self.environment:
            args += ["--ro-bind", str(folder), str(folder)]
        # (2) the job's own folder read-write, what it may read read-only
        args += ["--bind", str(mounts.workdir), str(mounts.workdir)]
        for folder in mounts.readonly:
            args += ["--ro-bind", str(folder), str(folder)]
        if mounts.relay_dir is not None:
            args += ["--bind", str(mounts.relay_dir), str(RELAY_DIR)]
        # (4) no network, unless this job must listen (an inference server)
        if mounts.network:
            args += ["--share-net", "--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf"]
        # (4) no GPU but those given: their nodes only, skipped where the host has none
        for node in gpu_device_nodes(mounts.gpus):
            args += ["--dev-bind-try", node, node]
        # last: the fresh root itself (the folders bwrap made for the binds) read-only
        args += ["--remount-ro", "/", "--chdir", str(mounts.workdir), "--"]
        return args + list(argv)


@dataclass
class ProcessCap:
    """A pids cgroup of one job: a fork bomb meets ``pids.max``, not the host's limit."""

    path: Path
    limit: int
    _procs: int = field(default=-1, repr=False)

    @classmethod
    def create(cls, name: str, limit: int) -> ProcessCap | None:
        """A cgroup named ``name`` below this process's own, or None where none can be made
        (no pids controller, or no right to create one)."""
        root = _pids_cgroup()
        if root is None:
            return None
        path = root / name
        try:
            path.mkdir(mode=0o755)
        except FileExistsError:
            pass
        except OSError:
            return None
        try:
            (path / "pids.max").write_text(str(limit))
            procs = os.open(path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            with contextlib.suppress(OSError):
                path.rmdir()
            return None
        return cls(path=path, limit=limit, _procs=procs)

    def enter(self) -> None:
        """In the job's first process, between fork and exec: join the cgroup."""
        os.write(self._procs, str(os.getpid()).encode())

    def refused(self) -> int:
        """How many forks the cap has refused (the ``max`` line of ``pids.events``)."""
        with contextlib.suppress(OSError, ValueError):
            for line in (self.path / "pids.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "max":
                    return int(value)
        return 0

    def remove(self) -> None:
        """Close and delete the cgroup once its processes are gone."""
        if self._procs >= 0:
            os.close(self._procs)
            self._procs = -1
        for _ in range(50):  # killed processes leave the cgroup a moment after the signal
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)


def _pids_cgroup() -> Path | None:
    """This process's pids cgroup folder, where it holds one it may create children in."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, relative = line.split(":", 2)
        if "pids" in controllers.split(","):  # cgroup v1
            folder = Path("/sys/fs/cgroup/pids") / relative.lstrip("/")
            break
        if controllers == "" and Path("/sys/fs/cgroup/cgroup.controllers").is_file():  # v2
            folder = Path("/sys/fs/cgroup") / relative.lstrip("/")
            try:
                enabled = (folder / "cgroup.subtree_control").read_text().split()
            except OSError:
                return None
            if "pids" not in enabled:
                return None
            break
    else:
        return None
    return folder if os.access(folder, os.W_OK) else None
