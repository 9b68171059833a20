"""Fan-out inside a job: many independent tasks (shadow models) on the executor's workers.

The agent tells each job how wide it may fan out in ``BASTION_FANOUT``: ``local:N``
(N worker processes on this host, the agent's ``--max-parallel``) or ``ray:ADDRESS``
(Ray tasks on the cluster the agent runs jobs on, with Ray's token authentication).
Tasks are top-level functions of one picklable argument; results come back in order.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from bastion.errors import ConfigurationError

__all__ = ["FANOUT_ENV", "FanOut", "LocalFanOut", "RayFanOut", "fanout_from_environment"]

FANOUT_ENV = "BASTION_FANOUT"

T = TypeVar("T")
R = TypeVar("R")

Progress = Callable[[int, int], None]


class FanOut(Protocol):
    @property
    def width(self) -> int: ...

    def map(
        self, fn: Callable[[T], R], items: Sequence[T], *, progress: Progress | None = None
    ) -> list[R]:
        """``[fn(item) for item in items]``, run in parallel; ``progress(done, total)``."""
        ...


def _threads(width: int) -> None:
    """A worker's share of the host's cores, so parallel tasks do not oversubscribe them."""
    import torch  # noqa: PLC0415 - imported in the worker, which trains with it

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // width))


class LocalFanOut:
    """Worker processes on this host (``width`` 1 runs the tasks in this process)."""

    def __init__(self, width: int) -> None:
        if width < 1:
            raise ConfigurationError(f"fan-out width must be at least 1, got {width}")
        self._width = width

    @property
    def width(self) -> int:
        return self._width

    def map(
        self, fn: Callable[[T], R], items: Sequence[T], *, progress: Progress | None = None
    ) -> list[R]:
        if self._width == 1 or len(items) <= 1:
            results = []
            for done, item in enumerate(items, start=1):
                results.append(fn(item))
                if progress is not None:
                    progress(done, len(items))
            return results
        # spawn, not fork: the job process holds torch's thread pools and an HTTP client.
        context = multiprocessing.get_context("spawn")
        width = min(self._width, len(items))
        with concurrent.futures.ProcessPoolExecutor(
            max_workers=width, mp_context=context, initializer=_threads, initargs=(width,)
        ) as pool:
            futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
            found: dict[int, R] = {}
            for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
                found[futures[future]] = future.result()
                if progress is not None:
                    progress(done, len(items))
        return [found[i] for i in range(len(items))]


class RayFanOut:
    """Ray tasks (one CPU each) on the cluster at ``address``."""

    def __init__(self, address: str, width: int | None = None) -> None:
        from bastion.agent.executors.ray import connect  # noqa: PLC0415 - Ray is an extra

        self._ray = connect(address)
        cpus = int(self._ray.cluster_resources().get("CPU", 1))
        self._width = width or max(1, cpus)

    @property
    def width(self) -> int:
        return self._width

    def map(
        self, fn: Callable[[T], R], items: Sequence[T], *, progress: Progress | None = None
    ) -> list[R]:
        remote = self._ray.remote(num_cpus=1, max_retries=0)(_ray_task)
        pending = {remote.remote(fn, item): i for i, item in enumerate(items)}
        found: dict[int, Any] = {}
        while pending:
            ready, _ = self._ray.wait(list(pending), num_returns=1)
            for ref in ready:
                found[pending.pop(ref)] = self._ray.get(ref)
                if progress is not None:
                    progress(len(found), len(items))
        return [found[i] for i in range(len(items))]


def _ray_task(fn: Callable[[Any], Any], item: Any) -> Any:
    _threads(1)
    return fn(item)


def fanout_from_environment(environ: dict[str, str] | None = None) -> FanOut:
    """The fan-out the agent granted this job (one worker when it granted none)."""
    value = (environ if environ is not None else dict(os.environ)).get(FANOUT_ENV, "local:1")
    kind, _, rest = value.partition(":")
    if kind == "local":
        try:
            return LocalFanOut(int(rest or "1"))
        except ValueError:
            raise ConfigurationError(f"{FANOUT_ENV}={value!r}: local:N needs a number") from None
    if kind == "ray" and rest:
        return RayFanOut(rest)
    raise ConfigurationError(f"{FANOUT_ENV}={value!r}: expected local:N or ray:ADDRESS")
