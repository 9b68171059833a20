"""Placement: whether a cluster's agent can hold a run's ``resources``.

Pure functions on the run spec's ``resources`` (as stored) and the capacity the cluster's
agent last advertised in its heartbeat (:class:`bastion.api.clusters.Capacity`, as stored).
Submission refuses a run no agent of its cluster can hold (:func:`check_submit`); leasing
gives an agent only a run its host can hold (:func:`shortfall`).

A cluster whose agent has not advertised a capacity yet (never heartbeated, or an agent
from before placement) is taken to have no GPU and unknown CPUs and memory: it gets CPU
runs, and a GPU run is refused until its agent says it has GPUs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bastion.errors import InvalidSpec

__all__ = ["Need", "check_submit", "need_of", "shortfall"]


@dataclass(frozen=True)
class Need:
    """What placement reads of a run's ``resources``."""

    gpus: int = 0
    memory_mb: int = 4096
    cpus: int | None = None
    workers: int = 1


def need_of(spec: Mapping[str, Any]) -> Need:
    """The placement needs of a stored run spec (defaults for a spec from before them)."""
    resources = spec.get("resources")
    if not isinstance(resources, Mapping):
        return Need()
    cpus = resources.get("cpus_per_worker")
    return Need(
        gpus=int(resources.get("gpus", 0)),
        memory_mb=int(resources.get("memory_mb", 4096)),
        cpus=None if cpus is None else int(cpus),
        workers=int(resources.get("workers", 1)),
    )


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def shortfall(
    need: Need,
    capacity: Mapping[str, Any] | None,
    *,
    cluster: str,
    free_gpus: int | None = None,
) -> str | None:
    """Why the cluster's agent cannot hold the run, in one line; None when it can.

    ``free_gpus`` (at lease time) is how many of its GPUs the agent has not given to
    running jobs: a GPU run waits for them rather than being given to an agent that
    cannot start it now.
    """
    return _gpu_shortfall(need, capacity, cluster=cluster, free_gpus=free_gpus) or (
        None if capacity is None else _host_shortfall(need, capacity, cluster=cluster)
    )


def _gpu_shortfall(
    need: Need, capacity: Mapping[str, Any] | None, *, cluster: str, free_gpus: int | None
) -> str | None:
    """(1) GPUs: a cluster whose agent never said it has one has none."""
    gpus = capacity.get("gpus", []) if capacity else []
    advertised = len(gpus) if isinstance(gpus, list) else 0
    if need.gpus > advertised:
        if capacity is None:
            return (
                f"cluster {cluster} has no agent with {_plural(need.gpus, 'GPU')} (its agent "
                "has not advertised its capacity yet: start it on a GPU host first)"
            )
        return (
            f"cluster {cluster} has no agent with {_plural(need.gpus, 'GPU')} "
            f"(its agents advertise {advertised})"
        )
    if free_gpus is not None and need.gpus > free_gpus:
        return f"cluster {cluster} has {free_gpus} of its {advertised} GPUs free now"
    return None


def _host_shortfall(need: Need, capacity: Mapping[str, Any], *, cluster: str) -> str | None:
    """(2) the host's memory, (3) its CPUs (unknown until the agent advertised them)."""
    memory = int(capacity.get("memory_mb", 0))
    if need.memory_mb > memory:
        return (
            f"cluster {cluster} has no agent with {need.memory_mb} MiB of memory "
            f"(its agents advertise {memory} MiB); lower resources.memory_mb"
        )
    cpus = int(capacity.get("cpus", 0))
    if need.cpus is not None and need.cpus * need.workers > cpus:
        wanted = _plural(need.cpus * need.workers, "CPU")
        if need.workers > 1:
            wanted += f" ({need.workers} workers x {need.cpus})"
        return f"cluster {cluster} has no agent with {wanted} (its agents advertise {cpus})"
    return None


def check_submit(
    spec: Mapping[str, Any], capacity: Mapping[str, Any] | None, *, cluster: str
) -> None:
    """Refuse (:class:`InvalidSpec`) a run its cluster cannot hold, naming what is missing."""
    need = need_of(spec)
    reason = shortfall(need, capacity, cluster=cluster)
    if reason is not None:
        raise InvalidSpec(reason)
