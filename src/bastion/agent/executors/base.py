"""The protocol every executor implements."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from bastion.agent.relay import RelayTarget
from bastion.security.sandbox import Limits, Sandbox

if TYPE_CHECKING:
    from bastion.api.clusters import GpuInfo

__all__ = ["Executor", "JobHandle", "JobRequest"]


@dataclass(frozen=True)
class JobRequest:
    """One attempt of one run, ready to execute in ``workdir``.

    ``sandbox`` is None only for an agent started with ``--no-sandbox``; ``readonly`` are
    the folders the job may read besides its own; ``network`` keeps the host's network (an
    inference server's port). Picklable: the Ray executor ships it to a worker."""

    run_id: str
    attempt: int
    workdir: Path
    environment: dict[str, str]
    timeout_seconds: int
    limits: Limits
    relay: RelayTarget
    sandbox: Sandbox | None
    readonly: tuple[Path, ...] = ()
    network: bool = False
    #: What runs in the sandbox; empty: ``python -m bastion.agent.job WORKDIR``.
    command: tuple[str, ...] = ()
    #: The host indices of the GPUs the agent gave the job (its sandbox shows only these).
    gpus: tuple[int, ...] = ()
    #: CPUs the job occupies: ``workers x cpus_per_worker`` (what a Ray task reserves).
    cpus: int = 1
    #: Data-parallel training processes, and how often their group may start again.
    workers: int = 1
    restarts: int = 2


class JobHandle(Protocol):
    request: JobRequest

    def poll(self) -> int | None:
        """The exit code once finished, else None."""
        ...

    def kill(self) -> None: ...

    def elapsed(self) -> float: ...

    def limit_reached(self) -> str | None:
        """Which limit stopped the job, where the executor can tell (for the run's reason)."""
        ...


class Executor(Protocol):
    @property
    def free_slots(self) -> int: ...

    def start(self, request: JobRequest) -> JobHandle: ...

    def gpus(self) -> list[GpuInfo]:
        """The GPUs its jobs can be given (asked once, at agent start)."""
        ...
