"""Crash-safe, private file writing: write to a temp file beside the target, fsync, rename.

A reader never sees a half-written file, and a failure leaves the old file (or
no file) in place. Folders Bastion makes are its user's alone (0700); a root folder that
group or others can reach (the home, a storage root) is refused.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import itertools
import os
import shlex
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from bastion.errors import ConfigurationError

__all__ = [
    "atomic_output",
    "atomic_write_bytes",
    "ensure_private_dir",
    "ensure_private_root",
    "file_lock",
    "fsync_dir",
    "sha256_file",
]


def fsync_dir(path: Path) -> None:
    """Flush a directory entry so a rename inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` and the parents it lacks, each readable only by the owner."""
    missing = itertools.takewhile(lambda folder: not folder.exists(), (path, *path.parents))
    for folder in reversed(list(missing)):
        folder.mkdir(exist_ok=True, mode=0o700)
    if not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
    return path


def ensure_private_root(path: Path, *, what: str) -> Path:
    """Create ``path`` private, or refuse an existing one that group or others can reach.

    For the folders whose files must stay the user's alone (``BASTION_HOME``: keys,
    databases, credentials; a storage root: plaintext while jobs run). Files inside need
    not be checked one by one: nobody else can get past a 0700 folder.
    """
    ensure_private_dir(path)
    info = path.stat()
    if info.st_uid != os.getuid():
        raise ConfigurationError(
            f"{path}: {what} belongs to user id {info.st_uid}, not to this user ({os.getuid()}); "
            "run Bastion as the user who owns it, or give it a folder of its own"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise ConfigurationError(
            f"{path}: {what} has mode {mode:04o}, open to group or others; make it private "
            f"with 'chmod -R go-rwx {shlex.quote(str(path))}' (and rotate the keys if others "
            "may have read them)"
        )
    return path


@contextlib.contextmanager
def atomic_output(path: Path, *, mode: int = 0o600) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` only if the block exits cleanly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically."""
    with atomic_output(path, mode=mode) as handle:
        handle.write(data)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created 0600) across processes."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def sha256_file(path: Path) -> str:
    """The file's SHA-256, read in 1 MiB chunks (memory stays flat whatever its size)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
