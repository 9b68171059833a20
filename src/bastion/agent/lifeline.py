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
import os
import signal
import threading
from collections.abc import Mapping
from types import FrameType

from bastion.parent_death import PARENT_DEATH_SIGNAL, bind_to_parent

__all__ = [
    "LIFELINE_ENV",
    "PARENT_DEATH_SIGNAL",
    "bind_to_parent",
    "die_with_agent",
    "end_process_group",
]

#: The job's environment names the file descriptor of its end of the lifeline here.
LIFELINE_ENV = "BASTION_AGENT_LIFELINE"


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
