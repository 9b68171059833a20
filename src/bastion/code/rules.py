"""The rules a code package must meet: safe relative paths, source and text only, bounded sizes.

A package is what a user's job imports, so it holds Python source and small text or image
files; native code, bytecode, pickles, weights and nested archives are refused by name and
by content. The limits are module attributes read at call time (here and in ``archive``), so
a deployment or a test may change them by setting ``bastion.code.rules.MAX_FILES`` and so on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import PurePosixPath

from bastion.errors import CodeRefused

__all__ = [
    "MAX_ARCHIVE_BYTES",
    "MAX_DEPTH",
    "MAX_FILES",
    "MAX_FILE_BYTES",
    "MAX_TOTAL_BYTES",
    "SKIPPED_DIRS",
    "FileRecord",
    "check_file",
    "check_path",
]

MAX_FILES = 1000
MAX_FILE_BYTES = 8 << 20
MAX_TOTAL_BYTES = 32 << 20
#: The compressed archive: it travels sealed inside one API request.
MAX_ARCHIVE_BYTES = 640 << 10
MAX_DEPTH = 16
#: Folders ``pack`` leaves out (caches, VCS, virtualenvs, build output); also any "*.egg-info".
SKIPPED_DIRS = frozenset(
    {
        "__pycache__",
        ".git",
        ".hg",
        ".svn",
        ".venv",
        "venv",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".tox",
        "node_modules",
        "build",
        "dist",
        ".ipynb_checkpoints",
    }
)

_MAX_NAME_BYTES = 255

#: Refused by suffix: (suffixes, what they are, what to do instead).
_REFUSED_SUFFIXES: tuple[tuple[frozenset[str], str, str], ...] = (
    (
        frozenset({".so", ".pyd", ".dll", ".dylib", ".o", ".a", ".lib", ".exe"}),
        "native code",
        "a package holds source only; install compiled libraries in the job's image",
    ),
    (
        frozenset({".pyc", ".pyo"}),
        "Python bytecode",
        "ship the .py source instead",
    ),
    (
        frozenset(
            {
                *(".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".joblib", ".bin", ".npy", ".npz"),
                *(".h5", ".hdf5", ".keras", ".onnx", ".safetensors"),
            }
        ),
        "serialized weights or a pickle-capable format",
        "weights do not belong in code: register them as a signed model version",
    ),
    (
        frozenset(
            {".zip", ".whl", ".egg", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".jar", ".rar"}
        ),
        "a nested archive",
        "Python imports code from zip files and archives hide what is in them; add the files",
    ),
)

_NATIVE_MAGIC = (
    b"\x7fELF",  # Linux
    b"\xfe\xed\xfa\xce",  # Mach-O, 32 and 64 bit, both byte orders, and universal binaries
    b"\xfe\xed\xfa\xcf",
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",
    b"\x00asm",  # WebAssembly
)
_ARCHIVE_MAGIC = (
    b"PK\x03\x04",
    b"PK\x05\x06",
    b"\x1f\x8b",
    b"\xfd7zXZ\x00",
    b"7z\xbc\xaf\x27\x1c",
)
#: Binary files a package may hold: images and fonts, which nothing imports or unpickles.
_BINARY_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".ico", ".woff", ".woff2", ".ttf"})


def _refuse(relative: str, found: str, advice: str) -> CodeRefused:
    return CodeRefused(f"{relative}: {found}; {advice}")


def check_path(relative: str) -> None:
    """Raise :class:`CodeRefused` unless ``relative`` is a safe relative POSIX path.

    Not empty, not absolute, no backslash or control character, valid UTF-8, no empty,
    ``.`` or ``..`` component, each component at most 255 bytes, at most ``MAX_DEPTH`` deep.
    """
    shown = repr(relative)
    advice = "rename it to a plain relative path inside the package"
    if not relative:
        raise _refuse(shown, "an empty path", advice)
    if relative.startswith("/"):
        raise _refuse(shown, "an absolute path", advice)
    if "\\" in relative:
        raise _refuse(shown, "a backslash in the path", advice)
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in relative):
        raise _refuse(shown, "a control character in the path", advice)
    try:
        relative.encode()
    except UnicodeEncodeError:
        raise _refuse(shown, "a path that is not valid UTF-8", advice) from None
    parts = relative.split("/")
    if any(part in {"", ".", ".."} for part in parts):
        raise _refuse(shown, "an empty, '.' or '..' path component", advice)
    if any(len(part.encode()) > _MAX_NAME_BYTES for part in parts):
        raise _refuse(shown, f"a name longer than {_MAX_NAME_BYTES} bytes", "shorten it")
    if len(parts) > MAX_DEPTH:
        raise _refuse(shown, f"more than {MAX_DEPTH} folders deep", "flatten the package")


def _is_pe(data: bytes) -> bool:
    """A Windows executable: "MZ", then "PE\\0\\0" at the offset stored at 0x3c (a text file
    may well start with "MZ")."""
    if not data.startswith(b"MZ") or len(data) < 0x40:
        return False
    offset = int.from_bytes(data[0x3C:0x40], "little")
    return data[offset : offset + 4] == b"PE\x00\x00"


def _is_bzip2(data: bytes) -> bool:
    # "BZh" could start a text file; a bzip2 stream goes on with a level digit and a block magic.
    return (
        data[:3] == b"BZh"
        and data[3:4] in {b"%d" % level for level in range(1, 10)}
        and data[4:10] in {b"1AY&SY", b"\x17rE8P\x90"}
    )


def _ends_in_zip(data: bytes) -> bool:
    """A zip's directory sits at its end (its last record within 64 KiB of it), so Python
    imports a zip appended to anything."""
    return b"PK\x05\x06" in data[-(0xFFFF + 22) :]


def _is_pickle(data: bytes, relative: str) -> bool:
    """Binary data that opens with a pickle PROTO opcode (protocol 2 and up) and parses so."""
    if data[:1] != b"\x80":
        return False
    # The scanner pulls in numpy and fickling: only for binary files (the agent starts lean).
    from bastion.security.filescan import scan_bytes  # noqa: PLC0415

    return scan_bytes(data, name=relative).file_format.startswith("pickle")


def check_file(relative: str, data: bytes) -> None:
    """Raise :class:`CodeRefused`, naming ``relative``, unless ``data`` may be in a package."""
    # (1) Size, before any look at the bytes.
    if len(data) > MAX_FILE_BYTES:
        raise _refuse(
            relative,
            f"{len(data)} bytes, above the {MAX_FILE_BYTES}-byte limit for one file",
            "register large data as a dataset and read it from the job",
        )
    # (2) Names that say native code, bytecode, weights or an archive.
    suffix = PurePosixPath(relative).suffix.lower()
    for suffixes, found, advice in _REFUSED_SUFFIXES:
        if suffix in suffixes:
            raise _refuse(relative, f"{found} ({suffix})", advice)
    # (3) Contents that say so whatever the name.
    if data.startswith(_NATIVE_MAGIC) or _is_pe(data):
        raise _refuse(relative, "native code (an executable or library)", _REFUSED_SUFFIXES[0][2])
    if data.startswith(_ARCHIVE_MAGIC) or _is_bzip2(data) or _ends_in_zip(data):
        raise _refuse(relative, "a nested archive (by its contents)", _REFUSED_SUFFIXES[3][2])
    # (4) Text is fine; binary only as an image or font, never a pickle.
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        return
    if _is_pickle(data, relative):
        raise _refuse(
            relative,
            "a pickle, which can run code when loaded",
            "store data as CSV or JSON, or weights as a signed model version",
        )
    if suffix not in _BINARY_SUFFIXES:
        raise _refuse(
            relative,
            "a binary file; a package holds source and text only",
            f"register data as a dataset (images and fonts {sorted(_BINARY_SUFFIXES)} may stay)",
        )


@dataclass(frozen=True)
class FileRecord:
    """One file of a package: where it is, and what it holds."""

    path: str  #: relative POSIX path
    sha256: str  #: lowercase hex
    size: int

    @classmethod
    def of(cls, relative: str, data: bytes) -> FileRecord:
        """The record of ``data`` stored at ``relative``."""
        return cls(path=relative, sha256=hashlib.sha256(data).hexdigest(), size=len(data))

    def as_json(self) -> dict[str, object]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size}
