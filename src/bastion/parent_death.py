"""Dying with the process that started this one: Linux's parent-death signal; and ending
a process whose work is done without the interpreter's teardown.

Used by the agent for its jobs (:mod:`bastion.agent.lifeline`), by the CLI for the planes
it starts, and by a training job for its data-parallel workers.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

__all__ = ["PARENT_DEATH_SIGNAL", "bind_to_parent", "exit_now"]

#: Catchable, so the job can take its process group down with it; before the job installs
#: its handler, the default action ends the job (which has started nothing yet).
PARENT_DEATH_SIGNAL = signal.SIGTERM

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, resolved in the agent: the child must not load libraries after fork."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    function: Callable[..., int] | None = getattr(libc, "prctl", None)
    return function


_prctl = _load_prctl()


def bind_to_parent(parent: int) -> None:
    """In the child between fork and exec: die when the thread that started it dies.

    ``parent`` is the starting process's pid, taken before the fork: a parent that died
    before the request was made would never send the signal, so the child ends itself.
    """
    if _prctl is None:
        return
    _prctl(_PR_SET_PDEATHSIG, int(PARENT_DEATH_SIGNAL), 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


def exit_now(code: int) -> NoReturn:
    """End this process with ``code`` once its work is written and reported: output flushed,
    no interpreter teardown (freeing a data-parallel group's gloo objects there can abort
    the process with SIGABRT after its work is done)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
