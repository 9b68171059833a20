"""The protocol every executor implements."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = ["Executor", "JobHandle", "JobRequest"]


@dataclass(frozen=True)
class JobRequest:
    """One attempt of one run, ready to execute in ``workdir``."""

    run_id: str
    attempt: int
    workdir: Path
    environment: dict[str, str]
    timeout_seconds: int
    memory_mb: int
    cpu_seconds: int | None


class JobHandle(Protocol):
    request: JobRequest

    def poll(self) -> int | None:
        """The exit code once finished, else None."""
        ...

    def kill(self) -> None: ...

    def elapsed(self) -> float: ...


class Executor(Protocol):
    @property
    def free_slots(self) -> int: ...

    def start(self, request: JobRequest) -> JobHandle: ...
