"""Fan-out: run N independent sub-tasks and gather their results, locally or on Ray.

The evaluation suite uses this for shadow models; the same call runs on a process
pool on one machine or as Ray tasks on a cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Protocol, TypeVar

from bastion.agent.executors.ray import connect

__all__ = ["FanOut", "LocalFanOut", "RayFanOut"]

T = TypeVar("T")
R = TypeVar("R")


class FanOut(Protocol):
    def map(self, function: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """Apply ``function`` to every item in parallel; results in input order."""
        ...


class LocalFanOut:
    """A process pool on this machine (``function`` must be importable, i.e. picklable)."""

    def __init__(self, *, workers: int) -> None:
        self.workers = workers

    def map(self, function: Callable[[T], R], items: Iterable[T]) -> list[R]:
        with ProcessPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(function, items))


class RayFanOut:
    """Ray tasks on the cluster at ``address`` (token authentication as for the executor)."""

    def __init__(self, *, address: str, cpus_per_task: float = 1.0) -> None:
        self._ray: Any = connect(address)
        self._cpus = cpus_per_task

    def map(self, function: Callable[[T], R], items: Iterable[T]) -> list[R]:
        def call(item: T) -> R:  # a plain function, so builtins and callables work too
            return function(item)

        remote = self._ray.remote(num_cpus=self._cpus)(call)
        return list(self._ray.get([remote.remote(item) for item in items]))
