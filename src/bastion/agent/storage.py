"""The agent's storage root: one private working directory per run attempt."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from bastion.errors import ConfigurationError
from bastion.files import ensure_private_dir, ensure_private_root

__all__ = ["Storage"]

#: Below this much free space a run is refused rather than started to fail half way.
MIN_FREE_BYTES = 64 << 20
#: Held (flock) by the agent that runs jobs from this root, for as long as it lives.
CLAIM = "agent.lock"


class Storage:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._claim: int | None = None

    def check(self) -> None:
        """Refuse a storage root that cannot be created, is open to others, unwritable or
        full, with the reason (jobs' plaintext lives here while they run)."""
        try:
            ensure_private_root(self.root, what="the storage root")
        except OSError as exc:
            raise ConfigurationError(
                f"{self.root}: cannot create the storage root ({exc.strerror})"
            ) from None
        if not os.access(self.root, os.W_OK):
            raise ConfigurationError(f"{self.root}: storage root is not writable")
        free = shutil.disk_usage(self.root).free
        if free < MIN_FREE_BYTES:
            raise ConfigurationError(
                f"{self.root}: only {free >> 20} MiB free; the agent needs at least "
                f"{MIN_FREE_BYTES >> 20} MiB"
            )

    def claim(self) -> None:
        """Hold this root for this process until it ends, however it ends (the kernel drops
        the lock with the process); refuse a root another agent holds."""
        if self._claim is not None:
            return
        fd = os.open(self.root / CLAIM, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigurationError(
                f"{self.root}: another agent runs jobs from this storage root; give each "
                "agent its own --storage"
            ) from None
        self._claim = fd

    def attempt_dir(self, run_id: str, attempt: int) -> Path:
        """Where one attempt of a run works (not created)."""
        return self.root / "runs" / run_id / f"attempt-{attempt}"

    def workdir(self, run_id: str, attempt: int) -> Path:
        path = self.attempt_dir(run_id, attempt)
        ensure_private_dir(path)
        return path

    def attempts(self, run_id: str | None = None) -> list[Path]:
        """The attempt folders on disk: of one run, or of every run."""
        return sorted((self.root / "runs").glob(f"{run_id or '*'}/attempt-*"))
