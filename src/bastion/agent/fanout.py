"""Fan-out inside a job: many independent tasks (shadow models) on the executor's workers.

The agent tells each job how wide it may fan out in ``BASTION_FANOUT``: ``local:N``
(N worker processes on this host, the agent's ``--max-parallel``) or ``ray:ADDRESS``
(Ray tasks on the cluster the agent runs jobs on, with Ray's token authentication).
Tasks are top-level functions of one picklable argument; results come back in order.

Local worker processes are spawned and import torch and the task's code before their first
task (a few seconds each), so a local fan-out first runs one task in the job's own process,
on one worker's share of the cores, and hands the rest to workers only when that saves more
than starting them costs; otherwise it runs them all there, with the same thread count.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from bastion.errors import ConfigurationError
from bastion.evaluate.fanout import FanOut, Progress

__all__ = [
    "FANOUT_ENV",
    "WORKER_START_SECONDS",
    "FanOut",
    "LocalFanOut",
    "RayFanOut",
    "fanout_from_environment",
]

FANOUT_ENV = "BASTION_FANOUT"

#: What starting one local worker costs (a spawned interpreter importing torch and the
#: evaluation code): 3 to 4 s measured on a 2-core host.
WORKER_START_SECONDS = 4.0

T = TypeVar("T")
R = TypeVar("R")


def _threads(width: int) -> None:
    """A worker's share of the host's cores, so parallel tasks do not oversubscribe them."""
    import torch  # noqa: PLC0415 - imported in the worker, which trains with it

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // width))


@contextlib.contextmanager
def _worker_share(width: int) -> Iterator[None]:
    """This process on one worker's share of the cores (as a worker of ``width`` would run)."""
    import torch  # noqa: PLC0415 - the tasks train with it

    before = torch.get_num_threads()
    _threads(width)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _in_order(
    fn: Callable[[T], R], items: Sequence[T], progress: Progress | None, *, done: int, total: int
) -> list[R]:
    results = []
    for index, item in enumerate(items, start=done + 1):
        results.append(fn(item))
        if progress is not None:
            progress(index, total)
    return results


class LocalFanOut:
    """Worker processes on this host (``width`` 1 runs the tasks in this process)."""

    def __init__(self, width: int, *, worker_start_seconds: float = WORKER_START_SECONDS) -> None:
        if width < 1:
            raise ConfigurationError(f"fan-out width must be at least 1, got {width}")
        self._width = width
        self._worker_start = worker_start_seconds
        self._last_width = width

    @property
    def width(self) -> int:
        return self._width

    @property
    def last_width(self) -> int:
        return self._last_width

    def map(
        self, fn: Callable[[T], R], items: Sequence[T], *, progress: Progress | None = None
    ) -> list[R]:
        total = len(items)
        if self._width == 1 or total <= 1:
            self._last_width = 1
            return _in_order(fn, items, progress, done=0, total=total)
        rest = items[1:]
        width = min(self._width, len(rest))
        # The first task runs here, timed, on the share of the cores a worker would have.
        with _worker_share(self._width):
            started = time.perf_counter()
            first = fn(items[0])
            seconds = time.perf_counter() - started
            if progress is not None:
                progress(1, total)
            saved = seconds * len(rest) * (1 - 1 / width)
            if saved <= self._worker_start:
                self._last_width = 1
                return [first, *_in_order(fn, rest, progress, done=1, total=total)]
        self._last_width = width
        # spawn, not fork: the job process holds torch's thread pools and an HTTP client.
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            max_workers=width, mp_context=context, initializer=_threads, initargs=(self._width,)
        ) as pool:
            futures = {pool.submit(fn, item): i for i, item in enumerate(rest)}
            found: dict[int, R] = {}
            for done, future in enumerate(concurrent.futures.as_completed(futures), start=2):
                found[futures[future]] = future.result()
                if progress is not None:
                    progress(done, total)
        return [first, *(found[i] for i in range(len(rest)))]


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

    @property
    def last_width(self) -> int:
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
