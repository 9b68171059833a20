"""What the agent hands an inference server, without the server's weight (no torch here).

The agent decrypts a model version into the job's folder and puts the version's signed
manifest beside it (``SEALED``), so the server can check every file itself; a hot-swap is a
second staged folder named in ``SWAP_REQUEST``.
"""

from __future__ import annotations

from pathlib import Path

from bastion.files import atomic_write_bytes, ensure_private_dir
from bastion.security.sealed import MANIFEST
from bastion.security.signing import signature_path_for

__all__ = ["SEALED", "SWAP_REQUEST", "copy_signed_manifest"]

#: Where the agent puts the version's signed manifest inside the staged folder.
SEALED = ".sealed"
#: The agent's hand-over of a version staged for a hot-swap (in the job's folder).
SWAP_REQUEST = "swap.json"


def copy_signed_manifest(sealed: Path, folder: Path) -> None:
    """Put a sealed version's manifest and signature beside its decrypted files, so the
    server can check them itself (the agent does this when it stages a model)."""
    target = folder / SEALED
    ensure_private_dir(target)
    for file in (sealed / MANIFEST, signature_path_for(sealed / MANIFEST)):
        atomic_write_bytes(target / file.name, file.read_bytes())
