"""Decide whether a foreign model file is provably safe to load.

Pickle-based formats (pickle, joblib, PyTorch ``.pt/.pth/.bin`` zips, object
``.npy``) can run any code when loaded. Bastion refuses them unless every import
the pickle would perform is on a short allowlist of constructors that only build
tensors, arrays and plain containers. fickling parses and symbolically
interprets the pickle (without running it) to list those imports and to grade
the file; its verdict is reported, but acceptance needs the allowlist.

Bastion itself writes weights only as safetensors and never unpickles.
"""

from __future__ import annotations

import ast
import bz2
import gzip
import io
import lzma
import re
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from fickling.analysis import Severity, check_safety
from fickling.fickle import PickleDecodeError, StackedPickle

from bastion.errors import InvalidInput, UnsafeFileError

__all__ = ["SAFE_IMPORTS", "ScanReport", "scan_bytes", "scan_file"]

MAX_PICKLE_BYTES = 1 << 30

_STORAGE_TYPES = (
    "Float",
    "Double",
    "Half",
    "BFloat16",
    "Long",
    "Int",
    "Short",
    "Char",
    "Byte",
    "Bool",
    "ComplexFloat",
    "ComplexDouble",
)

#: (module, name) pairs a pickle may import. Each only rebuilds data.
SAFE_IMPORTS: frozenset[tuple[str, str]] = frozenset(
    {
        ("collections", "OrderedDict"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch", "Size"),
        *(("torch", f"{name}Storage") for name in _STORAGE_TYPES),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        *(
            (module, name)
            for module in ("builtins", "__builtin__")
            for name in ("set", "frozenset", "bytearray", "complex", "slice")
        ),
        # protocol-2 pickles of bytes go through codecs.encode(str, "latin1")
        ("_codecs", "encode"),
    }
)

_FORBIDDEN_OPCODES = frozenset({"EXT1", "EXT2", "EXT4"})  # copyreg's registry maps to any callable
#: Persistent ids hand an object to the loader's own ``persistent_load``: PyTorch's zip
#: reader maps them to the archive's storages; any other loader could map them to anything.
_PERSISTENT_ID_OPCODES = frozenset({"PERSID", "BINPERSID"})

#: The members ``torch.load`` reads from a zip checkpoint, under its one top folder; tensor
#: storages are ``data/<key>``. Anything else (a second ``DATA.PKL``, a ``code/`` folder) is
#: refused: the verdict must not depend on which copy a loader would pick.
_TORCH_ZIP_MEMBERS = frozenset(
    {
        "data.pkl",
        "version",
        ".data/version",
        "byteorder",
        ".format_version",
        ".storage_alignment",
        ".data/serialization_id",
    }
)
_TORCH_STORAGE = re.compile(r"data/[0-9]+")


@dataclass
class ScanReport:
    """What the scan looked at and found."""

    path: str
    file_format: str
    pickles: int = 0
    imports: list[str] = field(default_factory=list)
    unsafe: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    fickling_severity: str = Severity.LIKELY_SAFE.name

    @property
    def safe(self) -> bool:
        return not self.reasons

    def refuse(self, reason: str) -> None:
        self.reasons.append(reason)


def _import_names(node: ast.Import | ast.ImportFrom) -> Iterable[tuple[str, str]]:
    if isinstance(node, ast.ImportFrom):
        for alias in node.names:
            yield (node.module or "", alias.name)
    else:
        for alias in node.names:
            module, _, name = alias.name.rpartition(".")
            yield (module, name)


def _check_pickle(
    data: bytes, report: ScanReport, *, where: str, persistent_ids: bool = False
) -> None:
    if len(data) > MAX_PICKLE_BYTES:
        report.refuse(f"{where}: pickle larger than {MAX_PICKLE_BYTES} bytes, not analysed")
        return
    try:
        stacked = StackedPickle.load(io.BytesIO(data), fail_on_decode_error=True)
    except (PickleDecodeError, ValueError, EOFError) as exc:
        report.refuse(f"{where}: not a parseable pickle ({exc})")
        return
    for pickled in stacked:
        report.pickles += 1
        # (1) Opcodes that fickling cannot follow or that resolve callables indirectly.
        names = {opcode.name for opcode in pickled}
        if pickled.has_invalid_opcode:
            report.refuse(f"{where}: invalid opcode sequence")
        if extensions := sorted(names & _FORBIDDEN_OPCODES):
            report.refuse(f"{where}: uses the copyreg extension registry ({extensions})")
        if not persistent_ids and (persistent := sorted(names & _PERSISTENT_ID_OPCODES)):
            report.refuse(
                f"{where}: uses persistent ids ({persistent}) outside a PyTorch zip checkpoint; "
                "what they load depends on the loader"
            )
        # (2) Every import must be on the allowlist; (3) fickling must grade the rest.
        try:
            _check_imports(pickled, report, where=where)
        except Exception as exc:  # the analyser itself failed: fail closed
            report.refuse(f"{where}: the pickle could not be analysed ({type(exc).__name__})")


def _check_imports(pickled: Any, report: ScanReport, *, where: str) -> None:
    for node in pickled.properties.imports:
        for module, name in _import_names(node):
            dotted = f"{module}.{name}" if module else name
            report.imports.append(dotted)
            if (module, name) not in SAFE_IMPORTS:
                report.unsafe.append(dotted)
                report.refuse(f"{where} imports {dotted}, which is not on the allowlist")
    if pickled.has_interpretation_error or pickled.has_resource_exhaustion:
        report.refuse(f"{where}: the pickle could not be fully interpreted")
    severity = check_safety(pickled).severity
    if severity > Severity[report.fickling_severity]:
        report.fickling_severity = severity.name
    if severity >= Severity.LIKELY_OVERTLY_MALICIOUS:
        report.refuse(f"{where}: fickling grades it {severity.name}")


def _check_npy(handle: io.BufferedIOBase | io.BytesIO, report: ScanReport, *, where: str) -> None:
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            _, _, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            _, _, dtype = np.lib.format.read_array_header_2_0(handle)
    except (ValueError, OSError) as exc:
        report.refuse(f"{where}: not a valid .npy header ({exc})")
        return
    if dtype.hasobject:
        # An object array's data is a pickle: say what it would import, then refuse.
        _check_pickle(handle.read(), report, where=where)
        report.refuse(f"{where}: object array; its data is a pickle (store numeric arrays only)")


def _scan_zip(data: bytes, report: ScanReport) -> None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [info for info in archive.infolist() if not info.is_dir()]
    except zipfile.BadZipFile as exc:
        report.refuse(f"not a readable zip archive ({exc})")
        return
    names = [PurePosixPath(info.filename) for info in members]
    if not names:
        report.refuse("empty archive")
        return
    if all(name.suffix == ".npy" for name in names):
        report.file_format = "npz"
        for info in members:
            with archive.open(info) as member:
                _check_npy(io.BytesIO(member.read()), report, where=f"member {info.filename}")
        return
    if any(name.name.lower() == "data.pkl" for name in names):
        report.file_format = "pytorch-zip"
        if any("code" in name.parts or name.name == "constants.pkl" for name in names):
            report.refuse("TorchScript archive: it carries code; export the weights as safetensors")
        _check_torch_members([info.filename for info in members], report)
        for info in members:
            if info.filename.lower().endswith(".pkl"):
                _check_pickle(
                    archive.read(info), report, where=f"member {info.filename}", persistent_ids=True
                )
        return
    report.refuse("zip archive that is neither a PyTorch checkpoint nor an .npz")


def _check_torch_members(names: list[str], report: ScanReport) -> None:
    """Every member is one ``torch.load`` expects, once, under one top folder."""
    tops = {name.split("/", 1)[0] for name in names}
    if len(tops) != 1 or any("/" not in name for name in names):
        report.refuse(f"PyTorch zip with members outside one top folder ({sorted(tops)})")
        return
    seen: set[str] = set()
    for name in names:
        inner = name.split("/", 1)[1]
        if inner.lower() in seen:
            report.refuse(f"member {name}: appears more than once (in some letter case)")
        seen.add(inner.lower())
        if inner not in _TORCH_ZIP_MEMBERS and not _TORCH_STORAGE.fullmatch(inner):
            report.refuse(f"member {name}: not a member a PyTorch checkpoint has")


_DECOMPRESSORS: tuple[tuple[bytes, str, Callable[[bytes], bytes]], ...] = (
    (b"\x1f\x8b", "gzip", gzip.decompress),
    (b"BZh", "bz2", bz2.decompress),
    (b"\xfd7zXZ", "xz", lzma.decompress),
    (b"\x78", "zlib", zlib.decompress),
)


def scan_bytes(data: bytes, *, name: str) -> ScanReport:
    """Scan the bytes of a model file; the report says whether it is safe."""
    report = ScanReport(path=name, file_format="pickle")
    if data.startswith(b"PK\x03\x04") or data.startswith(b"PK\x05\x06"):
        report.file_format = "zip"
        _scan_zip(data, report)
    elif data.startswith(b"\x93NUMPY"):
        report.file_format = "npy"
        _check_npy(io.BytesIO(data), report, where="array")
    else:
        for magic, label, decompress in _DECOMPRESSORS:
            if data.startswith(magic):
                try:
                    data = decompress(data)
                except (OSError, ValueError, EOFError, zlib.error, lzma.LZMAError):
                    continue
                report.file_format = f"pickle+{label}"
                break
        _check_pickle(data, report, where="pickle")
    return report


def scan_file(path: Path) -> ScanReport:
    """Scan a foreign model file; raise :class:`UnsafeFileError` unless provably safe."""
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    if path.stat().st_size > MAX_PICKLE_BYTES * 4:
        raise UnsafeFileError(f"{path}: larger than the scanner's limit; convert it to safetensors")
    report = scan_bytes(path.read_bytes(), name=str(path))
    if not report.safe:
        first = report.reasons[0]
        more = f" (+{len(report.reasons) - 1} more)" if len(report.reasons) > 1 else ""
        raise UnsafeFileError(
            f"{path}: not provably safe to load: {first}{more}; "
            "convert the weights to safetensors in a sandbox",
            reasons=report.reasons,
        )
    return report
