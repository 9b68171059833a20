"""A job dies with its agent, within moments, however the agent ends (SIGKILL included).

A job left running by a dead agent goes on computing on decrypted data until the control
plane fences it off, and nobody is left to wipe what it leaves. Two mechanisms tie it to
the agent; either is enough on its own:

1. **Parent-death signal** (Linux ``PR_SET_PDEATHSIG``, set between fork and exec by
   :func:`bind_to_parent`): the kernel sends :data:`PARENT_DEATH_SIGNAL` to the job when
   the thread that started it ends. The agent starts jobs from its loop thread, which
   lives as long as the agent does.
2. **Lifeline pipe**: the agent holds the only write end of a pipe and never writes to
   it; the job holds the read end (its number in :data:`LIFELINE_ENV`) and a thread waits
   on it (:func:`die_with_agent`). End of file means the agent's end is closed: the agent
   is gone, whichever of its threads started the job.

Either way the job kills its whole process group: it leads one (the executor starts it in
a session of its own), so the workers it started (fan-out) go with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from types import FrameType

__all__ = [
    "LIFELINE_ENV",
    "PARENT_DEATH_SIGNAL",
    "bind_to_parent",
    "die_with_agent",
    "end_process_group",
]

#: The job's environment names the file descriptor of its end of the lifeline here.
LIFELINE_ENV = "BASTION_AGENT_LIFELINE"
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


def end_process_group() -> None:
    """Kill this job's process group: the job and every process it started (no return)."""
    if os.getpgrp() == os.getpid():  # a group of its own: the executor's setsid
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _on_parent_death(_signum: int, _frame: FrameType | None) -> None:
    end_process_group()


def _watch(fd: int) -> None:
    with contextlib.suppress(OSError):
        while os.read(fd, 64):  # the agent never writes: this returns at end of file
            pass
    end_process_group()


def die_with_agent(environ: Mapping[str, str]) -> bool:
    """In the job: end its process group when the agent goes; say whether it has an agent.

    A job started by hand (no :data:`LIFELINE_ENV`) is left alone.
    """
    value = environ.get(LIFELINE_ENV)
    if value is None:
        return False
    fd = int(value)
    os.set_inheritable(fd, False)  # the job's own children need not hold it
    signal.signal(PARENT_DEATH_SIGNAL, _on_parent_death)
    threading.Thread(target=_watch, args=(fd,), name="agent-lifeline", daemon=True).start()
    return True
