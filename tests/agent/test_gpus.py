"""GPUs on the agent's side: what it advertises, which GPUs it gives a job, and that a job
sees only those (``CUDA_VISIBLE_DEVICES`` and the device nodes its sandbox binds).

No GPU is needed: the tests check what the agent advertises and the arguments it builds.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from bastion.agent.capacity import host_capacity, probe_gpus
from bastion.agent.gpus import GpuPool
from bastion.agent.job_setup import gpu_environment
from bastion.agent.loop import _State
from bastion.client import GpuInfo, LeaseOut
from bastion.errors import InvalidInput
from bastion.security.sandbox import Limits, Mounts, Sandbox, gpu_device_nodes


def _sandbox() -> Sandbox:
    return Sandbox("/usr/bin/bwrap", environment=(), version="bubblewrap 0.0")


def _device_binds(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == "--dev-bind-try"]


def test_a_job_given_no_gpu_sees_no_gpu(tmp_path: Path) -> None:
    assert gpu_environment(()) == {"CUDA_VISIBLE_DEVICES": "", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    argv = _sandbox().command(["true"], Mounts(tmp_path))
    assert _device_binds(argv) == []
    assert not any("nvidia" in arg for arg in argv)


def test_a_job_given_gpus_sees_those_and_no_other(tmp_path: Path) -> None:
    assert gpu_environment((1, 3)) == {
        "CUDA_VISIBLE_DEVICES": "1,3",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    }
    argv = _sandbox().command(["true"], Mounts(tmp_path, gpus=(3, 1)))
    assert _device_binds(argv) == [
        "/dev/nvidiactl",
        "/dev/nvidia-uvm",
        "/dev/nvidia-uvm-tools",
        "/dev/nvidia1",
        "/dev/nvidia3",
    ]
    # Bound where they are (a missing node is skipped by bwrap, "-try"), after the fresh /dev.
    for node in _device_binds(argv):
        at = argv.index(node)
        assert argv[at + 1] == node
        assert at > argv.index("--dev")
    assert "/dev/nvidia0" not in argv and "/dev/nvidia2" not in argv
    assert gpu_device_nodes([]) == []


def test_a_gpu_job_has_no_address_space_cap() -> None:
    """The CUDA driver maps far more address space than memory: RLIMIT_AS would break it."""
    assert Limits(memory_mb=4096).address_space is True
    assert Limits(memory_mb=4096, address_space=False).address_space is False


def test_the_probe_is_skipped_without_a_driver(tmp_path: Path) -> None:
    assert probe_gpus(driver_node=tmp_path / "nvidiactl") == []


def test_a_host_without_cuda_advertises_no_gpu_and_never_fails(tmp_path: Path) -> None:
    node = tmp_path / "nvidiactl"
    node.write_text("")  # a driver node, but this PyTorch finds no GPU (CI has none)
    assert probe_gpus(driver_node=node) == []


def test_capacity_counts_cpus_memory_and_the_gpus_given() -> None:
    gpus = [GpuInfo(index=0, name="NVIDIA H200", memory_mb=143771)]
    capacity = host_capacity(gpus=gpus)
    assert capacity.cpus >= 1
    assert capacity.memory_mb > 512
    assert capacity.gpus == gpus
    assert host_capacity(gpus=[]).gpus == []


def _lease(run_id: str, gpus: int) -> LeaseOut:
    return LeaseOut(
        run_id=run_id,
        project="p",
        attempt=1,
        spec={"job": {"type": "smoke"}, "resources": {"gpus": gpus}},
        job_token="t",
        lease_seconds=30,
        resume_from=None,
    )


def test_the_agent_gives_each_job_free_gpus_and_refuses_more_than_it_has() -> None:
    state = _State()
    pool = GpuPool(
        [GpuInfo(index=i, name="g", memory_mb=1) for i in range(3)],
        lock=state.lock,
        running=state.job_gpus,
    )
    assert pool.give(_lease("cpu", 0)) == ()
    assert pool.give(_lease("a", 2)) == (0, 1)
    assert pool.in_use() == {0, 1}
    with pytest.raises(InvalidInput, match=r"asks for 2 GPUs .* has 1 of its 3 free"):
        pool.give(_lease("b", 2))
    # A started job holds its GPUs in its request; staging ones in the pool's staging.
    pool.release("a")
    running = SimpleNamespace(handle=SimpleNamespace(request=SimpleNamespace(gpus=(1,))))
    state.jobs["a"] = cast(Any, running)
    assert pool.give(_lease("b", 2)) == (0, 2)
    assert pool.free_now() == []


def test_the_job_process_is_given_its_gpus_and_a_cpu_job_none(tmp_path: Path) -> None:
    """Through prepare() and the local executor: the job's own environment says which GPUs
    CUDA may use ("" for none), and a GPU job's address space is left to the driver."""
    import dataclasses
    import sys

    from bastion.agent.executors.local import LocalJob
    from bastion.agent.job_setup import Setup, prepare
    from tests.conftest import other_keyring

    setup = Setup(
        cluster="c1",
        url="http://127.0.0.1:9",
        ca_cert=None,
        storage=tmp_path / "storage",
        keyring=other_keyring(tmp_path / "keys"),
        home=tmp_path / "home",
        import_roots=(),
        private=(),
        sandbox=None,
        isolation="none",
        fanout={},
    )
    show = "import os; print('visible=' + repr(os.environ['CUDA_VISIBLE_DEVICES']))"
    seen = {}
    for run_id, gpus in (("cpu", ()), ("gpu", (2,))):
        workdir = tmp_path / run_id
        workdir.mkdir(mode=0o700)
        request, _ = prepare(_lease(run_id, len(gpus)), workdir, setup, gpus=gpus)
        assert request.gpus == gpus
        assert request.limits.address_space is (not gpus)
        job = LocalJob(dataclasses.replace(request, command=(sys.executable, "-c", show)))
        assert job.wait(timeout=60) == 0
        job.poll()
        seen[run_id] = (workdir / "job.log").read_text().strip()
    assert seen == {"cpu": "visible=''", "gpu": "visible='2'"}


def test_a_ray_job_runs_on_the_gpus_ray_assigned_and_no_other(tmp_path: Path) -> None:
    """On a Ray node the job's GPU slots become the GPUs Ray assigned to its task: those
    device nodes and that CUDA_VISIBLE_DEVICES; a count other than asked is refused."""
    from bastion.agent.executors.base import JobRequest
    from bastion.agent.executors.ray import on_assigned_gpus
    from bastion.errors import ConfigurationError

    request = JobRequest(
        run_id="r",
        attempt=1,
        workdir=tmp_path,
        environment={"KEEP": "1", **gpu_environment((0,))},
        timeout_seconds=60,
        limits=Limits(memory_mb=512),
        relay=cast(Any, None),
        sandbox=None,
        gpus=(0,),
    )
    placed = on_assigned_gpus(request, ["3"])  # Ray's ids may be strings
    assert placed.gpus == (3,)
    assert placed.environment == {
        "KEEP": "1",
        "CUDA_VISIBLE_DEVICES": "3",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    }
    with pytest.raises(ConfigurationError, match=r"Ray assigned GPUs \[\] to a job given 1"):
        on_assigned_gpus(request, [])
    cpu_job = dataclasses.replace(request, gpus=())
    assert on_assigned_gpus(cpu_job, []) is cpu_job


def test_an_operator_limit_caps_what_the_executor_found() -> None:
    state = _State()
    found = [GpuInfo(index=i, name="GPU (Ray)") for i in range(4)]
    pool = GpuPool.of_executor(found, limit=2, lock=state.lock, running=state.job_gpus)
    assert [gpu.index for gpu in pool.advertised] == [0, 1]
