"""Executors run jobs: ``local`` (subprocesses on this host) and ``ray`` (a Ray cluster).

Imported by the agent's loop; they run job processes and import nothing from ``server``.
"""

from __future__ import annotations

from bastion.agent.executors.base import Executor, JobHandle, JobRequest
from bastion.agent.executors.local import LocalExecutor
from bastion.errors import InvalidInput

__all__ = [
    "EXECUTOR_NAMES",
    "Executor",
    "JobHandle",
    "JobRequest",
    "LocalExecutor",
    "make_executor",
]

EXECUTOR_NAMES = ("local", "ray")


def make_executor(name: str, *, max_parallel: int, ray_address: str | None = None) -> Executor:
    """The executor ``bastion agent start --executor NAME`` asks for."""
    if name == "local":
        return LocalExecutor(max_parallel=max_parallel)
    if name == "ray":
        from bastion.agent.executors.ray import RayExecutor  # noqa: PLC0415 - Ray is optional

        return RayExecutor(max_parallel=max_parallel, address=ray_address)
    raise InvalidInput(f"unknown executor {name!r}; use one of {', '.join(EXECUTOR_NAMES)}")
