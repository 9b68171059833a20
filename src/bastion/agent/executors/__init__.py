"""Executors run jobs: ``local`` (subprocesses) and, later, ``ray``."""

from __future__ import annotations

from bastion.agent.executors.base import Executor, JobHandle, JobRequest
from bastion.agent.executors.local import LocalExecutor

__all__ = ["EXECUTORS", "Executor", "JobHandle", "JobRequest", "LocalExecutor"]

#: Executors by the name ``bastion agent start --executor`` takes.
EXECUTORS: dict[str, type[Executor]] = {"local": LocalExecutor}
