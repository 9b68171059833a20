"""The agent's GPU pool: the host's GPUs it may give jobs (found once at start, at most
``--gpus N`` of them), which of them its jobs hold, and giving a leased run its share.

The pool keeps no lock of its own: the GPUs of runs still staging and of started jobs
change under the agent's state lock, so one lock says which GPUs are free.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from bastion.client import GpuInfo, LeaseOut
from bastion.errors import InvalidInput

__all__ = ["GpuPool"]

log = logging.getLogger("bastion.agent")


class GpuPool:
    """The ``advertised`` GPUs and who holds them. ``lock`` is the agent's state lock;
    ``running`` gives the GPUs of every started job (called holding ``lock``)."""

    def __init__(
        self,
        advertised: list[GpuInfo],
        *,
        lock: threading.Lock,
        running: Callable[[], Iterable[tuple[int, ...]]],
    ) -> None:
        self.advertised = advertised
        self._lock = lock
        self._running = running
        #: The GPUs given to runs still staging (a started job's are in its request).
        self.staging: dict[str, tuple[int, ...]] = {}

    @classmethod
    def of_executor(
        cls,
        found: list[GpuInfo],
        *,
        limit: int | None,
        lock: threading.Lock,
        running: Callable[[], Iterable[tuple[int, ...]]],
    ) -> GpuPool:
        """The executor's GPUs (found once: they do not come and go under a running agent),
        at most ``limit`` of them (the operator's ``--gpus N``). A local executor's are the
        host's, by host index; a Ray executor's are slots of the Ray cluster's GPUs, which
        Ray itself assigns when a job starts."""
        gpus = list(found)
        if limit is not None:
            gpus = gpus[:limit]
        if gpus:
            log.info("GPUs: %s", ", ".join(f"{g.index}: {g.name}" for g in gpus))
        return cls(gpus, lock=lock, running=running)

    def in_use(self) -> set[int]:
        """The host indices of the GPUs given to this agent's jobs (hold ``lock``)."""
        used = {i for gpus in self.staging.values() for i in gpus}
        return used | {i for gpus in self._running() for i in gpus}

    def free(self) -> list[int]:
        """The host indices of the advertised GPUs no job holds, lowest first (hold ``lock``)."""
        used = self.in_use()
        return sorted(gpu.index for gpu in self.advertised if gpu.index not in used)

    def free_now(self) -> list[int]:
        """:meth:`free`, taking ``lock``."""
        with self._lock:
            return self.free()

    def give(self, lease: LeaseOut) -> tuple[int, ...]:
        """Set aside the free GPUs the run asks for (lowest indices first), or refuse."""
        resources = lease.spec.get("resources") or {}
        wanted = int(resources.get("gpus", 0))
        with self._lock:
            free = self.free()
            if wanted > len(free):
                raise InvalidInput(
                    f"the run asks for {wanted} GPUs (resources.gpus) but this agent has "
                    f"{len(free)} of its {len(self.advertised)} free; submit it again with fewer"
                )
            given = tuple(free[:wanted])
            self.staging[lease.run_id] = given
        return given

    def release(self, run_id: str) -> None:
        """The run has started (its request holds its GPUs) or failed (hold ``lock``)."""
        self.staging.pop(run_id, None)
