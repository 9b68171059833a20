"""What an audit needs to run its independent tasks in parallel, and the in-order default.

The agent supplies the parallel implementations (local worker processes, Ray tasks) in
:mod:`bastion.agent.fanout`; the evaluations only see this protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

__all__ = ["FanOut", "InOrder", "Progress"]

T = TypeVar("T")
R = TypeVar("R")

#: ``progress(done, total)`` after each finished task.
Progress = Callable[[int, int], None]


class FanOut(Protocol):
    @property
    def width(self) -> int: ...

    @property
    def last_width(self) -> int:
        """How many tasks the last ``map`` ran at a time (1: all in this process)."""
        ...

    def map(
        self, fn: Callable[[T], R], items: Sequence[T], *, progress: Progress | None = None
    ) -> list[R]:
        """``[fn(item) for item in items]``, run in parallel; ``progress(done, total)``."""
        ...


class InOrder:
    """Every task in this process, one after another."""

    width = 1
    last_width = 1

    def map(
        self, fn: Callable[[T], R], items: Sequence[T], *, progress: Progress | None = None
    ) -> list[R]:
        results = []
        for done, item in enumerate(items, start=1):
            results.append(fn(item))
            if progress is not None:
                progress(done, len(items))
        return results
