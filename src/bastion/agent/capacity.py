"""What this agent's host can give jobs: CPUs, memory and GPUs, advertised in its heartbeat.

The control plane places runs by it (``resources.gpus``, ``memory_mb``, ``cpus_per_worker``).
GPUs are found by ``torch.cuda`` in a short-lived child process, once, and only where an
NVIDIA driver's control node exists: the agent itself never initialises CUDA (its jobs'
processes do), a host without a GPU pays nothing, and a broken driver or a CPU-only
PyTorch means "no GPU", never a failed heartbeat. An operator may advertise fewer GPUs
than the host has (``bastion agent start --gpus N``, ``BASTION_AGENT_GPUS``), never more.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from bastion.api.clusters import Capacity, GpuInfo

__all__ = ["host_capacity", "probe_gpus"]

log = logging.getLogger("bastion.agent")

#: Asked of a fresh interpreter: every GPU CUDA sees, in PCI bus order (the device nodes' order).
_PROBE = """
import json
try:
    import torch
except ImportError:
    print("[]")
    raise SystemExit(0)
found = []
if torch.cuda.is_available():
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        found.append({"index": index, "name": props.name, "memory_mb": props.total_memory >> 20})
print(json.dumps(found))
"""

#: Where an NVIDIA driver is loaded, this node exists; no node, no probe.
DRIVER_NODE = Path("/dev/nvidiactl")


def probe_gpus(*, driver_node: Path = DRIVER_NODE, timeout: float = 120.0) -> list[GpuInfo]:
    """The host's GPUs as ``torch.cuda`` sees them; none where anything goes wrong."""
    if not driver_node.exists():
        return []
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",  # host indices, as jobs are given them
    }
    try:
        done = subprocess.run(  # noqa: S603 - this interpreter, fixed code
            [sys.executable, "-I", "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
            env=environment,
        )
        return [GpuInfo.model_validate(gpu) for gpu in json.loads(done.stdout)]
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        log.warning("no GPU advertised: finding them with torch.cuda failed (%s)", exc)
        return []


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may run on (a cpuset)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _memory_mb(meminfo: Path = Path("/proc/meminfo")) -> int:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) >> 10  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) >> 20
    except (OSError, ValueError):
        return 0


def host_capacity(*, gpus: list[GpuInfo]) -> Capacity:
    """This host's CPUs and memory now, and ``gpus`` (found once by :func:`probe_gpus`, as
    many as the operator lets the agent give)."""
    return Capacity(cpus=max(1, _cpus()), memory_mb=_memory_mb(), gpus=list(gpus))
