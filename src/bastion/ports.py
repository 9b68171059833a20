"""Whether a loopback port is free, and if not, which process holds it (Linux, best effort).

``bastion up`` and the quickstart check their port before they start anything, so a port
left taken by an earlier run is reported as such, naming the process, instead of as a
control plane that "did not come up".
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

__all__ = ["free_port", "port_owner"]

_LISTEN = "0A"  # the TCP state of a listening socket in /proc/net/tcp


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == _LISTEN:
                    local_port = int(fields[1].rsplit(":", 1)[1], 16)
                    if local_port == port:
                        inodes.add(fields[9])
    return inodes


def _holder(inodes: set[str]) -> str | None:
    """``PID n: command line`` of a process with one of the sockets open, if it can be seen."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").strip()
                    return f"PID {entry.name}: {command.decode(errors='replace')[:200]}"
    return None


def port_owner(port: int, host: str = "127.0.0.1") -> str | None:
    """None when ``host:port`` can be bound; otherwise what holds it, as well as can be told."""
    with socket.socket() as probe:
        # As the server will: a port whose old connections linger in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            pass
        else:
            return None
    inodes = _listening_inodes(port)
    return (_holder(inodes) if inodes else None) or "held by a process this user cannot see"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (``""``: on every interface), chosen by the kernel."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port
