"""A code package's deterministic archive (a gzip'd tar) and its tree manifest.

``pack`` turns a folder into the same bytes every time; ``unpack`` treats an archive as
hostile input and applies every rule of :mod:`bastion.code.rules` again while it writes the
files out; ``verify_tree`` checks an unpacked folder against its records before a job
imports it. Limits are read from ``bastion.code.rules`` at call time.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import io
import json
import os
import re
import shutil
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from bastion.code import rules
from bastion.code.rules import FileRecord, check_file, check_path
from bastion.errors import CodeRefused, IntegrityError, InvalidInput
from bastion.files import sha256_file
from bastion.security.audit_chain import canonical_json

__all__ = ["TREE_FORMAT", "pack", "read_tree", "tree_manifest", "unpack", "verify_tree"]

TREE_FORMAT = "bastion-code-tree/1"

#: Tar bytes a member may add to its contents: a header, padding and a PAX header for a long
#: name; plus the end-of-archive blocks. Bounds the decompressed stream of ``unpack``.
_MEMBER_OVERHEAD = 2048
_TAR_END = 10240
_REPACK = "make the archive with bastion.code.pack"
_UNREADABLE = "the archive is not a readable tar.gz; pack the folder again and resend it"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _walk(folder: Path, *, skip: Callable[[str], bool]) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Every entry under ``folder`` as (relative POSIX path, entry), never following a
    symlink; folders whose name ``skip`` accepts are not entered."""
    pending = [""]
    while pending:
        prefix = pending.pop()
        with os.scandir(folder / prefix) as entries:
            for entry in entries:
                relative = prefix + entry.name
                yield relative, entry
                if entry.is_dir(follow_symlinks=False) and not skip(entry.name):
                    pending.append(relative + "/")


def _skipped(name: str) -> bool:
    return name in rules.SKIPPED_DIRS or name.endswith(".egg-info")


def _package_files(folder: Path) -> list[str]:
    found: list[str] = []
    for relative, entry in _walk(folder, skip=_skipped):
        if entry.is_symlink():
            raise CodeRefused(f"{relative}: symlinks are not allowed: copy the file in")
        if entry.is_dir(follow_symlinks=False):
            if not _skipped(entry.name):
                check_path(relative)
        elif entry.is_file(follow_symlinks=False):
            check_path(relative)
            found.append(relative)
            if len(found) > rules.MAX_FILES:
                raise CodeRefused(
                    f"{folder}: more than {rules.MAX_FILES} files; move data out into a dataset"
                )
        else:
            raise CodeRefused(
                f"{relative}: not a regular file or folder (a socket, pipe or device); remove it"
            )
    return sorted(found)


def _read_regular(path: Path, relative: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # swapped for a symlink while we walked
            raise CodeRefused(f"{relative}: symlinks are not allowed: copy the file in") from None
        raise CodeRefused(
            f"{relative}: cannot be read ({exc.strerror}); make it readable or remove it"
        ) from None
    with os.fdopen(fd, "rb") as handle:
        return handle.read(rules.MAX_FILE_BYTES + 1)  # check_file refuses what is over


def _member(relative: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(relative)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _require_python(records: list[FileRecord], where: object) -> None:
    if not any(record.path.endswith(".py") for record in records):
        raise CodeRefused(f"{where}: no .py file; a code package holds the Python a job imports")


def pack(folder: Path) -> tuple[bytes, list[FileRecord]]:
    """The folder as a deterministic tar.gz, and its file records sorted by path.

    Regular files only, sorted, with mtime 0, owner 0 and mode 0644; folders of
    ``SKIPPED_DIRS`` and ``*.egg-info`` are left out. Raises :class:`CodeRefused`, naming
    the path, for a symlink or special file, a file that breaks a rule, too many or too
    large files, an archive over ``MAX_ARCHIVE_BYTES``, or a package without Python.
    """
    if not folder.is_dir():
        raise CodeRefused(f"{folder}: no such folder; name the folder that holds the code")
    records: list[FileRecord] = []
    total = 0
    tar_stream = io.BytesIO()
    with tarfile.open(fileobj=tar_stream, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for relative in _package_files(folder):
            data = _read_regular(folder / relative, relative)
            check_file(relative, data)
            total += len(data)
            if total > rules.MAX_TOTAL_BYTES:
                raise CodeRefused(
                    f"{relative}: the files up to here hold more than {rules.MAX_TOTAL_BYTES} "
                    "bytes, the limit for a package; move data out into a dataset"
                )
            tar.addfile(_member(relative, len(data)), io.BytesIO(data))
            records.append(FileRecord.of(relative, data))
    _require_python(records, folder)
    archive = io.BytesIO()
    # mtime=0 and no file name in the gzip header: the same tree always gives the same bytes.
    with gzip.GzipFile(filename="", mode="wb", fileobj=archive, mtime=0) as compressed:
        compressed.write(tar_stream.getvalue())
    if archive.tell() > rules.MAX_ARCHIVE_BYTES:
        raise CodeRefused(
            f"{folder}: the archive is {archive.tell()} bytes compressed, above the "
            f"{rules.MAX_ARCHIVE_BYTES}-byte limit; move data out into a dataset"
        )
    return archive.getvalue(), records


def _gunzip(archive: bytes) -> bytes:
    """The tar stream, never inflating more than the package limits allow."""
    limit = rules.MAX_TOTAL_BYTES + rules.MAX_FILES * _MEMBER_OVERHEAD + _TAR_END
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        stream = inflater.decompress(archive, limit + 1)
    except zlib.error as exc:
        raise IntegrityError(_UNREADABLE) from exc
    if len(stream) > limit:
        raise CodeRefused(
            f"the archive unpacks to more than {limit} bytes, above what a package of "
            f"{rules.MAX_TOTAL_BYTES} bytes needs; {_REPACK}"
        )
    if not inflater.eof or inflater.unused_data:
        raise IntegrityError(_UNREADABLE)
    return stream


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "a symlink"
    if member.islnk():
        return "a hard link"
    if member.isfifo():
        return "a named pipe"
    if member.isdev():
        return "a device"
    return f"a member of tar type {member.type!r}"


def _write_new(root_fd: int, relative: str, data: bytes) -> None:
    """Create ``relative`` under ``root_fd`` (0600, folders 0700) without following a link."""
    *folders, name = relative.split("/")
    opened: list[int] = []
    parent = root_fd
    try:
        for folder in folders:
            with contextlib.suppress(FileExistsError):
                os.mkdir(folder, 0o700, dir_fd=parent)
            parent = os.open(folder, _FOLDER, dir_fd=parent)
            opened.append(parent)
        fd = os.open(name, _NEW_FILE, 0o600, dir_fd=parent)
    except OSError as exc:
        if exc.errno not in {errno.EEXIST, errno.ENOTDIR, errno.ELOOP}:
            raise
        raise CodeRefused(
            f"{relative!r}: clashes with a file or folder already unpacked; {_REPACK}"
        ) from None
    finally:
        for folder_fd in opened:
            os.close(folder_fd)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _parents(relative: str) -> Iterator[str]:
    parts = relative.split("/")
    return ("/".join(parts[:depth]) for depth in range(1, len(parts)))


def _unpack(archive: bytes, root_fd: int) -> list[FileRecord]:
    # (1) Bounded input, compressed and inflated.
    if len(archive) > rules.MAX_ARCHIVE_BYTES:
        raise CodeRefused(
            f"the archive is {len(archive)} bytes, above the {rules.MAX_ARCHIVE_BYTES}-byte "
            "limit; move data out into a dataset"
        )
    records: list[FileRecord] = []
    files: set[str] = set()
    folders: set[str] = set()
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(_gunzip(archive)), mode="r:") as tar:
            for member in tar:
                # (2) A safe name; folders are implied by their files.
                name = member.name
                check_path(name)
                if member.isdir():
                    continue
                # (3) Regular files only (no links, devices, pipes or sparse files).
                if member.type not in {tarfile.REGTYPE, tarfile.AREGTYPE}:
                    raise CodeRefused(f"{name!r}: {_kind(member)}; {_REPACK}")
                # (4) Each path once, never both a file and a folder.
                if name in files or name in folders or not files.isdisjoint(_parents(name)):
                    raise CodeRefused(f"{name!r}: twice, or as a file and a folder; {_REPACK}")
                if len(files) >= rules.MAX_FILES:
                    raise CodeRefused(f"more than {rules.MAX_FILES} files; {_REPACK}")
                # (5) Limits on the bytes actually read, then the file rules.
                handle = tar.extractfile(member)
                data = handle.read(rules.MAX_FILE_BYTES + 1) if handle else b""
                check_file(name, data)
                total += len(data)
                if total > rules.MAX_TOTAL_BYTES:
                    raise CodeRefused(f"more than {rules.MAX_TOTAL_BYTES} bytes; {_REPACK}")
                # (6) Written as a new private file, never through a link.
                _write_new(root_fd, name, data)
                files.add(name)
                folders.update(_parents(name))
                records.append(FileRecord.of(name, data))
    except (tarfile.TarError, EOFError, ValueError) as exc:  # ValueError: bad encodings
        raise IntegrityError(_UNREADABLE) from exc
    _require_python(records, "the archive")
    return sorted(records, key=lambda record: record.path)


def _empty(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def unpack(archive: bytes, into: Path) -> list[FileRecord]:
    """Unpack an archive made by :func:`pack` (hostile input) into the empty folder ``into``.

    Every rule is applied again, on the bytes actually read. On any refusal what was written
    is removed (``into`` stays) and :class:`CodeRefused` is raised, or :class:`IntegrityError`
    for an archive that cannot be read. Returns the records sorted by path.
    """
    if into.is_symlink() or not into.is_dir() or any(into.iterdir()):
        raise InvalidInput(f"{into}: not an existing empty folder; unpack into a new one")
    root_fd = os.open(into, _FOLDER)
    try:
        return _unpack(archive, root_fd)
    except BaseException:
        _empty(into)
        raise
    finally:
        os.close(root_fd)


def tree_manifest(records: list[FileRecord]) -> bytes:
    """The canonical JSON of ``{"format": TREE_FORMAT, "files": [...]}``, sorted by path."""
    files = [record.as_json() for record in sorted(records, key=lambda record: record.path)]
    return canonical_json({"format": TREE_FORMAT, "files": files})


def _malformed(what: str) -> IntegrityError:
    return IntegrityError(f"the code tree manifest {what}; fetch the package's manifest again")


def _record(item: object) -> FileRecord:
    if not isinstance(item, dict) or set(item) != {"path", "sha256", "size"}:
        raise _malformed("has an entry that is not {path, sha256, size}")
    path, sha256, size = item["path"], item["sha256"], item["size"]
    if not isinstance(path, str) or not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise _malformed(f"has an entry with a bad path or sha256: {item!r}")
    if type(size) is not int or size < 0:
        raise _malformed(f"has an entry with a bad size: {item!r}")
    try:
        check_path(path)
    except CodeRefused as exc:
        raise _malformed(f"names an unsafe path ({exc})") from None
    return FileRecord(path=path, sha256=sha256, size=size)


def read_tree(body: bytes) -> list[FileRecord]:
    """The records of a tree manifest; :class:`IntegrityError` if it is malformed."""
    try:
        document = json.loads(body)
    except ValueError:
        raise _malformed("is not JSON") from None
    if not isinstance(document, dict) or set(document) != {"format", "files"}:
        raise _malformed("is not an object of {format, files}")
    if document["format"] != TREE_FORMAT or not isinstance(document["files"], list):
        raise _malformed(f"is not in the {TREE_FORMAT} format")
    records = [_record(item) for item in document["files"]]
    paths = [record.path for record in records]
    if paths != sorted(set(paths)):
        raise _malformed("lists paths out of order or twice")
    return records


def verify_tree(folder: Path, records: list[FileRecord]) -> None:
    """Raise :class:`IntegrityError` naming the first file under ``folder`` that is missing,
    extra, changed or a symlink; every file must match its record."""
    advice = "unpack the package again into a new empty folder"
    found: set[str] = set()
    try:
        for relative, entry in _walk(folder, skip=lambda _name: False):
            if entry.is_symlink():
                raise IntegrityError(f"{folder / relative}: a symlink; {advice}")
            if entry.is_file(follow_symlinks=False):
                found.add(relative)
            elif not entry.is_dir(follow_symlinks=False):
                raise IntegrityError(f"{folder / relative}: not a regular file; {advice}")
    except FileNotFoundError:
        raise IntegrityError(f"{folder}: no such folder; {advice}") from None
    expected = {record.path: record for record in records}
    for relative in sorted(found | expected.keys()):
        path = folder / relative
        if relative not in found:
            raise IntegrityError(f"{path}: missing; {advice}")
        if relative not in expected:
            raise IntegrityError(f"{path}: an extra file, not in the package; {advice}")
        record = expected[relative]
        if path.stat().st_size != record.size or sha256_file(path) != record.sha256:
            raise IntegrityError(f"{path}: changed since it was packed; {advice}")
