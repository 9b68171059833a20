"""The agent's storage root: one private working directory per run attempt."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bastion.errors import ConfigurationError
from bastion.files import ensure_private_dir

__all__ = ["Storage"]

#: Below this much free space a run is refused rather than started to fail half way.
MIN_FREE_BYTES = 64 << 20


class Storage:
    def __init__(self, root: Path) -> None:
        self.root = root

    def check(self) -> None:
        """Refuse a storage root that is missing, unwritable or full, with the reason."""
        try:
            ensure_private_dir(self.root)
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

    def workdir(self, run_id: str, attempt: int) -> Path:
        path = self.root / "runs" / run_id / f"attempt-{attempt}"
        ensure_private_dir(path)
        return path
